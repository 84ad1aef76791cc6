"""``nmisim serve``: the node agent, NMI v1.8.17 on the wire, answering from the engine."""
