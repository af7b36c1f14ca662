"""`patchlab evaluate`: success rates of patch files with controls, as a run folder and report."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import UserError
from ..pipelines.evaluate import evaluate_patches
from ..protocols import ALL_PROTOCOLS, PHYSICAL, PROTOCOLS
from ..runfolder import Summary
from ..pairdata import SourceBands
from .app import ModelArgs, SourceBandOpt, TargetBandOpt, emit_json, model_command
from .survival import DefenseOpt, PhysicalOpt, PhysicalRangesOpt, print_survives

def _split_values(values: list[str]) -> list[str]:
    return [v for item in values for v in item.replace(",", " ").split()]


def _sort_extras(extras: list[str], sizes: list[str], protocols: list[str], patches: list[Path]) -> None:
    """Let list options take several values after one flag (`--sizes 5 10 15`): a
    bare value is a size when numeric, a protocol when it names one, else a patch file."""
    for v in extras:
        try:
            float(v)
            sizes.append(v)
        except ValueError:
            if v in ALL_PROTOCOLS:
                protocols.append(v)
            else:
                patches.append(Path(v))


@model_command("evaluate")
def evaluate_cmd(
    classes: Annotated[tuple[str, str], typer.Option("--classes", help="SOURCE TARGET (SOURCE may be 'any').")],
    patch: Annotated[list[Path], typer.Option("--patch", help="Patch image (.png/.jpg) or .pt; repeatable.")],
    extra: Annotated[Optional[list[str]], typer.Argument(hidden=True, help="More values for --sizes/--protocol/--patch.")] = None,
    data: Annotated[Optional[Path], typer.Option("--data", help="Image folder (else synthesized exemplars).")] = None,
    sizes: Annotated[Optional[list[str]], typer.Option("--sizes", help="Patch areas in % of the image, e.g. --sizes 5 10 25.")] = None,
    protocol: Annotated[Optional[list[str]], typer.Option("--protocol", help="static | dynamic | random | physical (repeatable; default the first three).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Run folder (default reports/<time>-<source>-to-<target>/).")] = None,
    budget: Annotated[str, typer.Option("--budget", help="Split sizes of quick | standard | thorough (as probe and synth).")] = "quick",
    placements: Annotated[int, typer.Option("--placements", min=1, help="Random placements per image and size.")] = 8,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 128,
    defense: DefenseOpt = None,
    physical: PhysicalOpt = False,
    physical_ranges: PhysicalRangesOpt = None,
    source_band: SourceBandOpt = None,
    target_band: TargetBandOpt = None,
    *,
    opts: ModelArgs,
) -> None:
    """Measure how often patches flip SOURCE images to TARGET (static, dynamic, random; physical and
    defended models when asked), with controls."""
    size_vals, protos, patches = _split_values(sizes or []), _split_values(protocol or []), list(patch)
    _sort_extras(list(extra or []), size_vals, protos, patches)
    if physical or physical_ranges is not None:
        protos = list(protos or PROTOCOLS) + [PHYSICAL]
    try:
        size_nums = [float(s) for s in size_vals]
    except ValueError:
        raise UserError(f"--sizes takes numbers (percent of the image area), got {' '.join(size_vals)}") from None
    result = evaluate_patches(
        classes[0], classes[1], patches, data=data, budget=budget, sizes=size_nums or None, protocols=protos or None,
        out=out, **opts.model_kwargs(), seed=opts.seed,
        random_placements=placements, batch_size=batch_size, progress=opts.verbose and not opts.json_out,
        defenses=defense or (), physical_ranges=physical_ranges, bands=SourceBands.of(source_band, target_band),
    )
    if opts.json_out:
        emit_json(dict(result["summary"], run_dir=result["run_dir"], report=result["report"]))
        return
    s = Summary.from_dict(result["summary"])
    proto = s.primary_protocol
    c = s.data.counts
    typer.echo(f"{s.source.name} -> {s.target.name}: {s.data.counted.get('text')}")
    typer.echo(f"settings chosen on {c['selection_denominator']} selection images, rates counted on "
               f"{c['confirmation_denominator']} of the {c['confirmation']} counted images (those the model calls "
               "the source when clean" + (f"; {sure}" if (sure := s.confirmation.confidence_text()) else "") + ")")
    for e in s.entries:
        r = e.rate(proto)
        rate = "   - " if r is None else f"{100 * r.rate:5.1f} % [{100 * r.ci[0]:.1f}, {100 * r.ci[1]:.1f}]"
        lift_txt = f"  lift {100 * e.lift.value:+.1f} pts vs {e.lift.control}" if e.lift else ""
        typer.echo(f"  {e.name:<28} {proto} {rate}  reads as {e.reads_as.name}{lift_txt}")
    print_survives(s)
    typer.echo(f"report: {result['report']}")
