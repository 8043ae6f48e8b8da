"""
Switching a policy between train and eval mode only when one of its layers behaves differently in the two modes.

SB3 switches the whole policy to eval mode before every collection and back to train mode before every ``train``
call: with ``train_freq=1`` that is two recursive walks over every module per environment step (about 160
microseconds for SafeSupportQ's three [64, 64] networks on one CPU thread, more than a tenth of a gradient step).
Linear layers, convolutions and activations compute the same thing in both modes, so for policies built only from
them the switch is skipped and only the policy's own ``training`` flag follows; a policy with dropout, batch
normalisation or any layer not known to be mode-independent (e.g. a custom features extractor) is switched as SB3
does.
"""

from stable_baselines3.common.policies import ContinuousCritic
from stable_baselines3.common.torch_layers import CombinedExtractor, FlattenExtractor, NatureCNN
from stable_baselines3.dqn.policies import QNetwork
from torch import nn

#: Layers whose forward pass does not read ``self.training`` (compared by exact type: a subclass may read it).
MODE_INDEPENDENT_LAYERS: frozenset[type[nn.Module]] = frozenset(
    {
        nn.Linear,
        nn.Conv1d,
        nn.Conv2d,
        nn.Conv3d,
        nn.Flatten,
        nn.Identity,
        nn.LayerNorm,
        nn.Sequential,
        nn.ModuleList,
        nn.ModuleDict,
        nn.ReLU,
        nn.LeakyReLU,
        nn.ELU,
        nn.SELU,
        nn.GELU,
        nn.SiLU,
        nn.Mish,
        nn.Tanh,
        nn.Sigmoid,
        nn.Softplus,
        nn.Hardtanh,
        nn.Softmax,
        nn.LogSoftmax,
        FlattenExtractor,
        NatureCNN,
        CombinedExtractor,
        QNetwork,
        ContinuousCritic,
    }
)


def behaves_the_same_in_both_modes(module: nn.Module, also_independent: tuple[type[nn.Module], ...] = ()) -> bool:
    """
    :param module: a network
    :param also_independent: further layer types known not to read ``self.training`` (e.g. the package's actors)
    :return: whether every sub-module (the module itself excepted) is of a mode-independent type
    """
    known = MODE_INDEPENDENT_LAYERS | frozenset(also_independent)
    return all(type(sub_module) in known for sub_module in module.modules() if sub_module is not module)
