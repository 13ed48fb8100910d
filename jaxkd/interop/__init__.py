"""Interoperability with PyTorch and the original project: state-dict conversion (`state_dict`), safe reading of
torch pickles without torch (`torch_pickle`), the original's YAML configs (`yaml_import`) and the checks shared by
the convert command and the teacher loaders (`fit`).

The state-dict API is re-exported here (`from jaxkd import interop; interop.torch_to_jax(model, sd)`).
"""

from jaxkd.interop.state_dict import (
                                      StateDictMismatch,
                                      jax_to_torch,
                                      torch_state_dict_keys,
                                      torch_state_dict_shapes,
                                      torch_to_jax,
                                      unwrap_state_dict,
)

__all__ = ["StateDictMismatch", "torch_to_jax", "jax_to_torch", "torch_state_dict_shapes", "torch_state_dict_keys",
           "unwrap_state_dict"]
