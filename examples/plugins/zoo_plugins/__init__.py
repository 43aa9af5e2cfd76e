"""Example plug-ins for archzoo: a chunked-causal mask, a reverse-LM objective and a ReGLU MLP.

Put ``examples/plugins`` on ``PYTHONPATH`` (or in a run config's ``plugin_paths``) and name
them in a config by import path: ``mask: zoo_plugins.masks:chunked_causal``,
``objective: {name: zoo_plugins.objectives:reverse_lm}``, ``mlp: {kind: zoo_plugins.layers:ReGLU}``.
"""
