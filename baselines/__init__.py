"""The hand-designed optimizers, each a pure batched update rule equal to its torch.optim twin."""

from baselines.adadelta import AdaDelta
from baselines.adagrad import AdaGrad
from baselines.adam import Adam
from baselines.momentum import Momentum
from baselines.nadam import Nadam
from baselines.nag import NAG
from baselines.rmsprop import RMSProp
from baselines.sgd import SGD

__all__ = ["SGD", "Momentum", "NAG", "AdaGrad", "RMSProp", "AdaDelta", "Adam", "Nadam"]
