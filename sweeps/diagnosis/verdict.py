"""A diagnosis as a user reads it: the leading cause in a sentence, the evidence, the next step."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from sweeps.diagnosis.causes import Cause
from sweeps.diagnosis.next_step import NextStep

MIN_CONFIDENCE = 0.25  # below this no cause is named: the run is still learning, or nothing stands out


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10_000:
        return f"{value:,}"
    if isinstance(value, list):
        return "[" + "; ".join(" ".join(f"{k} {_fmt(v)}" for k, v in x.items()) if isinstance(x, dict)
                               else _fmt(x) for x in value) + "]"
    return str(value)


def evidence_line(cause: Cause, limit: int = 8) -> str:
    items = [(k, v) for k, v in cause.evidence.items() if v is not None and k != "spikes"][:limit]
    return ", ".join(f"{k}={_fmt(v)}" for k, v in items)


@dataclass
class Diagnosis:
    source: str
    causes: List[Cause]  # every cause weighed, the likeliest first
    next_step: NextStep
    summary: Dict[str, Any]  # the run in numbers: iterations, tokens, epochs, parameters, losses
    assumed: Dict[str, List[str]] = field(default_factory=dict)  # settings not given, by what they feed
    notes: List[str] = field(default_factory=list)

    @property
    def leading(self) -> Optional[Cause]:
        """The cause named first; None when none reaches MIN_CONFIDENCE."""
        return self.causes[0] if self.causes and self.causes[0].confidence >= MIN_CONFIDENCE else None

    def headline(self) -> str:
        lead = self.leading
        if lead is None:
            return "No cause of a plateau stands out: " + self.next_step.text
        return f"{lead.sentence} (confidence {lead.confidence:.2f}, {lead.level})"

    def _run_line(self) -> str:
        s = self.summary
        epochs = f"{s['epochs']:.2f} epochs of {s['unique_train_tokens']:,}" if s["epochs"] is not None \
            else "epochs unknown"
        return (f"{self.source}: {s['iters']:,} iterations, {s['tokens_seen']:,} tokens ({epochs}), "
                f"{s['num_params'] / 1e6:.2f}M parameters ({s['tokens_per_param']:.3g} tokens/param); val loss "
                f"{s['val_end']:.4f} at the end, best {s['val_best']:.4f} at iteration {s['val_best_iter']:,}")

    def _assumed_line(self) -> Optional[str]:
        keys = sorted({k for ks in self.assumed.values() for k in ks})
        if not keys:
            return None
        return ("not given, nanoGPT's defaults assumed (confidence lowered where they count): " + ", ".join(keys)
                + "; pass them as --key=value or --config FILE")

    def text(self) -> str:
        """For the console: the verdict first, then the run, every cause with its evidence, the next step."""
        lines = [self.headline(), "", self._run_line()]
        lines += [f"note: {n}" for n in self.notes]
        if (assumed := self._assumed_line()) is not None:
            lines.append(assumed)
        lines += ["", "causes (confidence, evidence):"]
        width = max(len(c.title) for c in self.causes)
        for c in self.causes:
            lines.append(f"  {c.title:<{width}}  {c.confidence:.2f} {c.level:<6}  {evidence_line(c)}")
            if c.assumed and c.confidence > 0:
                lines.append(f"  {'':<{width}}  not given: {', '.join(c.assumed)}")
        lead = self.leading
        if lead is not None and lead.evidence.get("spikes"):
            lines.append("spikes: " + _fmt(lead.evidence["spikes"]))
        lines += ["", "next: " + self.next_step.text]
        if self.next_step.command:
            lines.append("  " + self.next_step.command)
        return "\n".join(lines)

    def markdown(self) -> str:
        """A few lines for a report: the verdict, the evidence table, the next command."""
        lines = [f"**{self.headline()}**", "", self._run_line() + ".", ""]
        if (assumed := self._assumed_line()) is not None:
            lines += [f"_{assumed}_", ""]
        lines += ["| cause | confidence | evidence |", "|---|---|---|"]
        for c in self.causes:
            lines.append(f"| {c.title} | {c.confidence:.2f} ({c.level}) | {evidence_line(c).replace('|', '/')} |")
        lines += ["", f"Next: {self.next_step.text}"]
        if self.next_step.command:
            lines += ["", "```bash", self.next_step.command, "```"]
        return "\n".join(lines)
