"""torch_ref: the formulas of jaxkd in small, plain PyTorch — the yardstick for the parity suite.

Module and function names mirror jaxkd's one to one (jaxkd.models.cnn <-> torch_ref.cnn, jaxkd.losses <->
torch_ref.losses, ...), and model module names follow the original project's state-dict layout
(../shared/spec/PEER_CHECKPOINTS.md).
"""
