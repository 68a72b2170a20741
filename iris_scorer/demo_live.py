"""The demo's champion/challenger loop (issue 18): a challenger trained with other
hyper-parameters, shadow traffic with labels for part of it, live accuracy per version, and
``promote --from-live`` deciding at the end."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from typing import Any

from iris_scorer.children import cli_command
from ml.settings import Settings

#: the challenger's hyper-parameters: a logistic regression regularised much harder than the
#: champion's (params.yaml: C=1.0), so the two disagree on some flowers near the class borders
CHALLENGER_PARAMS: dict[str, Any] = {"C": 0.3, "max_iter": 500}
LABEL_SHARE = 0.5  # labels are published for half of the valid requests
WINDOW_LABELS = 250  # live performance window of the demo's worker
MIN_LABELLED = 500


def ensure_challenger(settings: Settings) -> str:
    """The version at ``@challenger``: trained and registered now unless one other than the
    champion is there already."""
    from ml import tracking
    from ml.challenger import train_challenger
    from ml.model import parse_model_uri
    from ml.register import current_alias_version

    name, _, _ = parse_model_uri(settings.model_uri)
    client = tracking.client(settings.mlflow_tracking_uri)
    champion = current_alias_version(client, name, "champion")
    challenger = current_alias_version(client, name, "challenger")
    if challenger is not None and challenger != champion:
        print(f"demo: challenger found in the registry (v{challenger}; champion v{champion})")
        return challenger
    print(f"demo: training a challenger with {CHALLENGER_PARAMS} (champion v{champion})")
    decision = train_challenger(settings.mlflow_tracking_uri, CHALLENGER_PARAMS)
    got = current_alias_version(client, name, "challenger")
    if got is None:
        from ml.register import promote

        promote(client, name, decision.version, "challenger")  # below the gate: a challenger still
        got = decision.version
    print(f"demo: {name}@challenger is v{got} (f1_macro {decision.f1_macro:.4f} offline)")
    return got


@dataclass
class LiveTally:
    compared: int = 0
    agreed: int = 0
    windows: list[dict[str, Any]] = field(default_factory=list)
    decision: str = ""

    def add_shadow(self, record: dict[str, Any]) -> None:
        self.compared += 1
        self.agreed += bool(record.get("agree"))

    def per_model(self) -> list[tuple[str, str, int, float, float]]:
        """(alias, version, labelled, accuracy, macro F1) over every window, from summed matrices."""
        from ml.feedback import accuracy, macro_f1

        sums: dict[tuple[str, str], list[list[int]]] = {}
        for window in self.windows:
            for m in window.get("models", []):
                key = (m["alias"], m["model_version"])
                total = sums.get(key)
                matrix = m["confusion"]
                sums[key] = (
                    matrix
                    if total is None
                    else [
                        [a + b for a, b in zip(r, s, strict=True)] for r, s in zip(total, matrix, strict=True)
                    ]
                )
        return [
            (alias, version, sum(map(sum, m)), accuracy(m), macro_f1(m))
            for (alias, version), m in sorted(sums.items())
        ]


def promote_from_live(env: dict[str, str]) -> str:
    """Run ``iris-scorer promote --from-live`` as a user would; its sentence (or its error)."""
    command = [*cli_command(), "promote", "--from-live", "--min-labelled", str(MIN_LABELLED)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180, check=False)
    text = (done.stdout + done.stderr).strip()
    return text or f"promote --from-live exited with {done.returncode}"


def print_live(tally: LiveTally) -> None:
    share = f"{tally.agreed / tally.compared:.3f}" if tally.compared else "-"
    print(f"shadow: {tally.compared} requests scored by both models, agreement {share}")
    print(f"live performance: {len(tally.windows)} windows of {WINDOW_LABELS} labelled predictions")
    for alias, version, labelled, acc, f1 in tally.per_model():
        print(f"  {alias:<10} v{version:<4} labelled={labelled:<5} accuracy={acc:.4f} f1_macro={f1:.4f}")
    print("promote --from-live:")
    for line in tally.decision.splitlines():
        print(f"  {line}")
