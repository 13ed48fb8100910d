"""torch_ref: the formulas of jaxkd in small, plain PyTorch — the yardstick for the parity suite.

Module and function names mirror jaxkd's one to one (jaxkd.models.cnn <-> torch_ref.cnn, jaxkd.losses <->
torch_ref.losses, jaxkd.losses.structural <-> torch_ref.structural, ...), and model module names follow the original
project's state-dict layout (../shared/spec/PEER_CHECKPOINTS.md). The code behind the names is written from SPEC.md
(LATER.md for the later teachers and losses) independently of jaxkd's, and torchvision's behaviour is torchvision
itself (torch_ref.augment); see DEVELOPERS.md, "What torch_ref is".
"""
