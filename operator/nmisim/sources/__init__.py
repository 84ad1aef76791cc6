"""Where the objects the engine evaluates come from, for the CLI and the node agent: YAML/JSON files
(:mod:`nmisim.sources.files`) and a live cluster read once through the kubernetes client
(:mod:`nmisim.sources.cluster`). The operator has informers of its own; the engine imports neither."""
