"""`segrefine serve`: the model behind an HTTP endpoint, with a page to try it (`pip install "segrefine[serve]"`)."""

from segrefine.serve.config import ServeConfig

__all__ = ["ServeConfig", "create_app", "serve"]


def __getattr__(name: str):
    if name in ("create_app", "serve"):  # starlette and uvicorn are imported only when the service is used
        from segrefine.serve import app

        return getattr(app, name)
    raise AttributeError(f"module 'segrefine.serve' has no attribute {name!r}")
