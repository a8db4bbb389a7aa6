"""Scenarios: fleets, timed faults and expectations, run in deterministic virtual time."""

from .runner import RunResult, check_scenario, run_scenario, validate_scenario
from .schema import Scenario, ScenarioError, find_scenario, list_scenarios, load_scenario, load_scenario_text

__all__ = [
    "RunResult",
    "Scenario",
    "ScenarioError",
    "check_scenario",
    "find_scenario",
    "list_scenarios",
    "load_scenario",
    "load_scenario_text",
    "run_scenario",
    "validate_scenario",
]
