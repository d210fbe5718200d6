"""The model zoo: `zoo.json` (published checkpoints and ImageNet backbone sources) and the embedded default
checkpoint. Installed as the data package `segrefine.weights`; read it through `segrefine.hub.registry`."""
