"""Which simulator stands in for which provider (`make run` without keys, and the end-to-end tests)."""

from __future__ import annotations

from submitter.simulators.acedata import AceDataSimulator
from submitter.simulators.apimart import APIMartSimulator
from submitter.simulators.base import Simulator
from submitter.simulators.ttapi import TTAPISimulator
from submitter.simulators.wavespeed import WaveSpeedSimulator

SIMULATORS: dict[str, type[Simulator]] = {
    "ttapi": TTAPISimulator,
    "acedata": AceDataSimulator,
    "wavespeed": WaveSpeedSimulator,
    "apimart": APIMartSimulator,
}
