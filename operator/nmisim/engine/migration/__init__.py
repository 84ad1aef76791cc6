"""Leaving NMI: what Azure Workload Identity gives each pod, against what NMI gives it today.

The after-world (``../shared/spec/workload-identity.md``), beside NMI's: the mutating webhook as v1.6.0
admits and mutates pods (:mod:`.webhook`), the simulated Entra's token exchange against federated
credentials (:mod:`.entra`), the application's credential by SDK and version (:mod:`.sdk`), the migration
proxy sidecar (:mod:`.proxy`), per pod the classes and hazards of each phase (:mod:`.classify`), and per
workload the plan (:mod:`.plan`). Pure: no Kubernetes client, no I/O.
"""
