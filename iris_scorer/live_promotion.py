"""``iris-scorer promote --from-live``: the gate of :mod:`ml.promotion` on the evidence in
``iris.performance``, then the alias move (recorded as every move is, so ``rollback`` works)."""

from __future__ import annotations

import typer

from ml.errors import BadInputError
from ml.settings import Settings


def promote_from_live(settings: Settings, min_labelled: int, margin: float | None) -> bool:
    """True when ``@champion`` moved to the challenger; the comparison is printed either way."""
    from consumers.performance_log import read_performance
    from ml import tracking
    from ml.model import parse_model_uri
    from ml.promotion import decide, gather
    from ml.register import current_alias_version, promote

    name, _, _ = parse_model_uri(settings.model_uri)
    _, challenger_alias, _ = parse_model_uri(settings.challenger_uri)
    client = tracking.client(settings.mlflow_tracking_uri)
    champion = current_alias_version(client, name, "champion")
    challenger = current_alias_version(client, name, challenger_alias or "challenger")
    if champion is None or challenger is None:
        missing = "@champion" if champion is None else f"@{challenger_alias or 'challenger'}"
        raise BadInputError(
            f"{name} has no {missing}: set it with `iris-scorer promote --alias "
            f"{missing[1:]} --version N` first."
        )
    if champion == challenger:
        raise BadInputError(f"{name}@champion and @challenger are both v{champion}: nothing to compare.")
    evidence = gather(read_performance(settings), champion, challenger)
    decision = decide(evidence, min_labelled, settings.promote_f1_margin if margin is None else margin)
    if not decision.promote and evidence.labelled < min_labelled:
        raise BadInputError(decision.sentence)
    typer.echo(decision.sentence)
    if decision.promote:
        previous = promote(client, name, challenger, "champion", gate=True)
        typer.echo(f"{name}@champion: v{previous or '-'} → v{challenger}")
    return decision.promote
