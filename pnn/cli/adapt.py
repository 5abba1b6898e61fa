"""``pnn adapt``: train while the physics changes; recovery times printed, record and figure
written."""

from __future__ import annotations

import sys
from pathlib import Path

from pnn import registry
from pnn.cli import common

__all__ = ["cmd_adapt"]


def cmd_adapt(args) -> int:
    from tqdm import tqdm

    from pnn.adapt import parse_event, run_adaptation, write_record

    if not args.event:
        raise ValueError("give at least one --event, e.g. --event jump:epoch=6.5,factor=0.9")
    events = [parse_event(e) for e in args.event]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in methods:
        if not registry.get_trainer(m).uses_physical_layers:
            physical = [n for n, t in registry.TRAINERS.items() if t.uses_physical_layers]
            raise ValueError(f"adapt changes the physics during training; it supports the "
                             f"methods with physical layers ({', '.join(physical)}), got {m!r}")
    from pnn.experiment import OUTPUT_FILES
    from pnn.fileio import check_writable

    check_writable(args.out, folder=True, what="--out", files=OUTPUT_FILES["adapt"])
    data = common.load_data(args, args.seed)

    class Bar:
        def __init__(self, method, cfg):
            self.bar = tqdm(total=cfg.epochs, desc=f"{method}/{args.system}", unit="epoch",
                            file=sys.stderr, dynamic_ncols=True)

        def update(self, rec):
            self.bar.set_postfix(val=f"{rec.get('val_accuracy', float('nan')):.3f}",
                                 param=f"{rec['param_value']:.4g}")
            self.bar.update(1)

        def close(self):
            self.bar.close()

    record = run_adaptation(args.system, data, methods, events, epochs=args.epochs,
                            seed=args.seed, twin=args.pat_twin, progress_factory=Bar,
                            evals_per_epoch=args.evals_per_epoch)
    out = Path(args.out)
    write_record(record, out)
    for method, res in record["methods"].items():
        for r in res["recovery"]:
            rec_t = ("never, before the next event or the end" if r["recovery_steps"] is None
                     else f"{r['recovery_epochs']:.2f} epoch(s) ({r['recovery_steps']} steps)")
            if r["drop"] is None:
                print(f"{method:>9}: event at epoch {r['event_epoch']:g}: nothing measured "
                      f"after it")
                continue
            print(f"{method:>9}: event at epoch {r['event_epoch']:g} (step {r['event_step']}): "
                  f"accuracy {r['before']:.1%} before, {r['after']:.1%} over the next "
                  f"{r['n_window']} measurements ({-100 * r['drop']:+.1f} points), settled "
                  f"at {r['settled']:.1%}; back within {100 * record['tolerance']:g} points: "
                  f"{rec_t}")
        print(f"{method:>9}: final {res['test_accuracy']:.1%}; "
              f"{res['cost']['physical_queries']:,} physical queries")
    print(f"wrote {out / 'adapt.json'} and {out / 'adapt.png'}")
    return 0

