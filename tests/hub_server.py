"""A loopback stand-in for the Hugging Face Hub: the few endpoints `huggingface_hub` calls to download and upload.

Files live in memory. Uploads are always "regular" (base64 inside the commit), never LFS or Xet. Use it as a context
manager; it serves on 127.0.0.1 at an ephemeral port from a daemon thread and shuts itself down after `lifetime`
seconds at the latest, so a stuck test cannot leave it running.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import yaml


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    private: bool = False
    branches: dict[str, str] = field(default_factory=dict)  # branch → commit
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit → {path: content}


class HubServer:
    """`with HubServer() as hub: hub.url` — add repos with `add_repo`, read them back with `files`."""

    def __init__(self, token: str | None = None, lifetime: float = 300.0) -> None:
        self.token = token  # when set: required for writes and for reading private repos
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._timer = threading.Timer(lifetime, self._httpd.shutdown)
        self._timer.daemon = True

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "HubServer":
        self._thread.start()
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def add_repo(self, repo_id: str, files: dict[str, bytes], *, private: bool = False, branch: str = "main") -> str:
        """Create (or extend) a repo with one commit holding `files` on `branch`; returns the commit id."""
        with self._lock:
            repo = self.repos.get(repo_id) or self._create(repo_id, private)
            return self._commit(repo, branch, files, "seed")

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[repo_id]
        return dict(repo.commits[repo.branches.get(revision, revision)])

    def _create(self, repo_id: str, private: bool) -> Repo:
        repo = self.repos[repo_id] = Repo(private=private)
        repo.branches["main"] = self._new_commit(repo, {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"}, "initial commit", None)
        return repo

    def _commit(self, repo: Repo, branch: str, changes: dict[str, bytes | None], message: str) -> str:
        parent = repo.branches.get(branch, repo.branches["main"])
        files = dict(repo.commits[parent])
        for path, content in changes.items():
            if content is None:
                files.pop(path, None)
            else:
                files[path] = content
        repo.branches[branch] = self._new_commit(repo, files, message, parent)
        return repo.branches[branch]

    @staticmethod
    def _new_commit(repo: Repo, files: dict[str, bytes], message: str, parent: str | None) -> str:
        tree = json.dumps(sorted((p, git_sha1(c)) for p, c in files.items()))
        commit = hashlib.sha1(f"{parent}\n{message}\n{tree}\n{len(repo.commits)}".encode()).hexdigest()
        repo.commits[commit] = files
        return commit


class HubError(Exception):
    def __init__(self, status: int, code: str | None, message: str, headers: dict | None = None, **body) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers, self.body = status, code, message, headers or {}, body


def _handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        def do_HEAD(self) -> None:
            self._dispatch("HEAD")

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_POST(self) -> None:
            self._dispatch("POST")

        # -- plumbing ------------------------------------------------------------------------------------------

        def _dispatch(self, method: str) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            parts = [unquote(p) for p in urlsplit(self.path).path.strip("/").split("/")]
            hub.requests.append((method, self.path))
            try:
                with hub._lock:
                    status, headers, payload = self._route(method, parts, body)
            except HubError as e:
                status, headers, payload = e.status, dict(e.headers), json.dumps({"error": e.message, **e.body}).encode()
                headers["Content-Type"] = "application/json"
                if e.code:
                    headers["X-Error-Code"] = e.code
                headers["X-Error-Message"] = e.message
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(payload)

        def _route(self, method: str, parts: list[str], body: bytes) -> tuple[int, dict[str, str], bytes]:
            if len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
                return self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
            if parts[:2] == ["api", "validate-yaml"] and method == "POST":
                return self._validate_yaml(json.loads(body))
            if parts[:3] == ["api", "repos", "create"] and method == "POST":
                return self._create_repo(json.loads(body))
            if len(parts) >= 4 and parts[:2] == ["api", "models"]:
                repo_id, rest = f"{parts[2]}/{parts[3]}", parts[4:]
                if method == "GET" and not rest:
                    return self._info(repo_id, "main")
                if method == "GET" and len(rest) >= 2 and rest[0] == "revision":
                    return self._info(repo_id, "/".join(rest[1:]))
                if method == "POST" and len(rest) >= 2 and rest[0] == "preupload":
                    return self._preupload(repo_id, "/".join(rest[1:]), json.loads(body))
                if method == "POST" and len(rest) >= 2 and rest[0] == "commit":
                    return self._commit(repo_id, "/".join(rest[1:]), body)
                if method == "POST" and len(rest) >= 2 and rest[0] == "branch":
                    return self._branch(repo_id, "/".join(rest[1:]), json.loads(body or b"{}"))
            raise HubError(404, None, f"no such endpoint: {method} {self.path}")

        def _json(self, data: object, status: int = 200) -> tuple[int, dict[str, str], bytes]:
            return status, {"Content-Type": "application/json"}, json.dumps(data).encode()

        def _authorized(self) -> bool:
            return hub.token is None or self.headers.get("Authorization") == f"Bearer {hub.token}"

        def _require_write(self) -> None:
            if not self._authorized():
                raise HubError(401, None, "Invalid credentials in Authorization header")

        def _repo(self, repo_id: str) -> Repo:
            repo = hub.repos.get(repo_id)
            if repo is None or (repo.private and not self._authorized()):
                raise HubError(404, "RepoNotFound", "Repository not found")
            return repo

        def _commit_id(self, repo: Repo, revision: str) -> str:
            commit = repo.branches.get(revision) or (revision if revision in repo.commits else None)
            if commit is None:
                raise HubError(404, "RevisionNotFound", "Invalid rev id: " + revision)
            return commit

        # -- endpoints -----------------------------------------------------------------------------------------

        def _resolve(self, repo_id: str, revision: str, path: str) -> tuple[int, dict[str, str], bytes]:
            repo = self._repo(repo_id)
            commit = self._commit_id(repo, revision)
            content = repo.commits[commit].get(path)
            if content is None:
                raise HubError(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": commit})
            return 200, {"X-Repo-Commit": commit, "ETag": f'"{git_sha1(content)}"', "Content-Type": "application/octet-stream"}, content

        def _info(self, repo_id: str, revision: str) -> tuple[int, dict[str, str], bytes]:
            repo = self._repo(repo_id)
            commit = self._commit_id(repo, revision)
            siblings = [{"rfilename": p} for p in sorted(repo.commits[commit])]
            return self._json({"id": repo_id, "sha": commit, "private": repo.private, "siblings": siblings})

        def _create_repo(self, payload: dict) -> tuple[int, dict[str, str], bytes]:
            self._require_write()
            repo_id = f"{payload.get('organization') or 'tester'}/{payload['name']}"
            if repo_id in hub.repos:
                raise HubError(409, None, "You already created this model repo", url=f"{hub.url}/{repo_id}")
            hub._create(repo_id, payload.get("private") is True or payload.get("visibility") == "private")
            return self._json({"url": f"{hub.url}/{repo_id}", "name": repo_id})

        def _branch(self, repo_id: str, branch: str, payload: dict) -> tuple[int, dict[str, str], bytes]:
            self._require_write()
            repo = self._repo(repo_id)
            if branch in repo.branches:
                raise HubError(409, None, "Reference already exists")
            repo.branches[branch] = self._commit_id(repo, payload.get("startingPoint") or "main")
            return self._json({})

        def _preupload(self, repo_id: str, revision: str, payload: dict) -> tuple[int, dict[str, str], bytes]:
            self._require_write()
            repo = self._repo(repo_id)
            current = repo.commits[self._commit_id(repo, revision)]
            files = [
                {
                    "path": f["path"],
                    "uploadMode": "regular",  # never LFS/Xet: contents arrive base64-encoded in the commit
                    "shouldIgnore": False,
                    "oid": git_sha1(current[f["path"]]) if f["path"] in current else None,
                }
                for f in payload["files"]
            ]
            return self._json({"files": files})

        def _commit(self, repo_id: str, revision: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
            self._require_write()
            repo = self._repo(repo_id)
            self._commit_id(repo, revision)
            lines = [json.loads(line) for line in body.splitlines() if line.strip()]
            header = next(line["value"] for line in lines if line["key"] == "header")
            changes: dict[str, bytes | None] = {}
            for line in lines:
                key, value = line["key"], line["value"]
                if key == "file":
                    changes[value["path"]] = base64.b64decode(value["content"])
                elif key == "deletedFile":
                    changes[value["path"]] = None
                elif key != "header":
                    raise HubError(400, None, f"this stand-in does not support {key!r} commit operations")
            commit = hub._commit(repo, revision, changes, header["summary"])
            return self._json({"commitUrl": f"{hub.url}/{repo_id}/commit/{commit}", "commitOid": commit, "pullRequestUrl": None})

        def _validate_yaml(self, payload: dict) -> tuple[int, dict[str, str], bytes]:
            content = payload["content"]
            if not content.startswith("---\n"):
                return self._json({"errors": [], "warnings": [{"message": "empty or missing yaml metadata"}]})
            try:
                meta = yaml.safe_load(content.split("---\n", 2)[1])
            except yaml.YAMLError as e:
                return self._json({"errors": [{"message": str(e)}], "warnings": []}, 400)
            if not isinstance(meta, dict):
                return self._json({"errors": [{"message": "metadata must be a mapping"}], "warnings": []}, 400)
            return self._json({"errors": [], "warnings": []})

    return Handler
