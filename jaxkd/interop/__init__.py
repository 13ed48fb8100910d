"""Interoperability with PyTorch and the original project: state-dict conversion (`state_dict`), safe reading of
torch pickles without torch (`torch_pickle`), the original's YAML configs (`yaml_import`) and the checks shared by
the convert command and the teacher loaders (`state_dict.fit_problems`).

The state-dict API is re-exported here (`from jaxkd import interop; interop.torch_to_jax(model, sd)`).
"""

from jaxkd.interop.state_dict import *  # noqa: F401,F403  (the public state-dict API)
from jaxkd.interop.state_dict import __all__  # noqa: F401
