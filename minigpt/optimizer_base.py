"""What every optimizer here keeps besides its update rule, written out instead of inherited from torch.optim.

    param_groups   a list of dicts, {"params": [tensors], "lr": ..., "weight_decay": ..., ...}: a setting a group
                   does not give takes the optimizer's default; a schedule changes "lr" in place
    state          {parameter: {"step": ..., "exp_avg": ..., ...}}: what the update rule remembers per parameter
    zero_grad()    drop every gradient, so the next backward starts from nothing
    state_dict()   the groups' settings and the state, parameters numbered 0, 1, ... in group order: the format
                   of torch.optim.Optimizer.state_dict, so a checkpoint of either loads in the other

torch.optim.Optimizer does the same plus hooks and torch.compile support; constructing one imports torch._dynamo
(2.3 s and 70 MB on the 2-core CPU machine), in every training process.
"""
from __future__ import annotations

from collections import defaultdict

import torch


class Optimizer:
    def __init__(self, params, defaults: dict):
        groups = list(params)
        if not groups:
            raise ValueError("the optimizer got no parameters (are they all frozen?)")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]  # plain tensors: one group
        self.defaults = defaults
        self.param_groups = [{**defaults, **group, "params": list(group["params"])} for group in groups]
        params = [p for group in self.param_groups for p in group["params"]]
        if len({id(p) for p in params}) < len(params):
            raise ValueError("a parameter appears in more than one parameter group")
        self.state: defaultdict[torch.Tensor, dict] = defaultdict(dict)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.detach_().zero_()

    def state_dict(self) -> dict:
        """{"state": {index: the parameter's state}, "param_groups": [settings with "params": [indices]]}."""
        index, groups = {}, []
        for group in self.param_groups:
            for p in group["params"]:
                index[p] = len(index)
            groups.append({**group, "params": [index[p] for p in group["params"]]})
        return {"state": {index[p]: s for p, s in self.state.items()}, "param_groups": groups}

    def load_state_dict(self, saved: dict) -> None:
        """The saved settings and state, onto this optimizer's parameters (the same groups, of the same sizes)."""
        sizes = [len(g["params"]) for g in saved["param_groups"]]
        if sizes != [len(g["params"]) for g in self.param_groups]:
            raise ValueError(f"the saved optimizer has parameter groups of sizes {sizes}; this one "
                             f"{[len(g['params']) for g in self.param_groups]}")
        by_index = {i: p for saved_group, group in zip(saved["param_groups"], self.param_groups)
                    for i, p in zip(saved_group["params"], group["params"])}
        self.state = defaultdict(dict)
        for i, s in saved["state"].items():
            p = by_index[i]  # each tensor to its parameter's device and dtype; the step count a plain int
            self.state[p] = {k: int(v) if k == "step" else v.to(p.device, p.dtype) if torch.is_tensor(v) else v
                             for k, v in s.items()}  # (torch's optimizers keep it as a tensor)
        self.param_groups = [{**saved_group, "params": group["params"]}
                             for saved_group, group in zip(saved["param_groups"], self.param_groups)]
