"""The models benchmark's tables: one row per model (jaxkd vs each torch variant, the ratio, MFU on GPU), and the
ratio per host-device setting when several were compared. Used by jaxkd.bench.models and jaxkd.bench.report."""

from __future__ import annotations

__all__ = ["format_table", "print_comparison"]


def _ms(v) -> str:
    return f"{v:.1f}" if v is not None else "-"


def format_table(results: dict, meta: dict) -> str:
    """One row per model: jaxkd's step time, every torch variant's, the best and the ratio (+ MFU on GPU)."""
    modes = meta.get("torch_modes") or []
    gpu = meta.get("device") == "gpu"
    head = f"{'model':<34} {'batch':>5} {'jaxkd ms':>9}" + "".join(f" {m + ' ms':>16}" for m in modes)
    head += f" {'best torch':>13} {'time_ratio':>10}"
    if gpu:
        head += f" {'TFLOP/s':>8} {'MFU':>6}"
    lines, notes = [head, "-" * len(head)], []
    for key, r in results.items():
        if "skipped" in r:
            lines.append(f"{r['model']:<34} skipped: {r['skipped']}")
            continue
        line = f"{r['model']:<34} {r['batch']:>5} {r['jaxkd_step_ms']:>9.1f}"
        for m in modes:
            v = r.get("torch_variants", {}).get(m, {})
            cell = _ms(v["step_ms"]) if "step_ms" in v else ("n/a" if "skipped" in v else "failed")
            line += f" {cell:>16}"
            if "error" in v:
                notes.append(f"  {key} {m}: {v['error']}")
        line += f" {r.get('torch_best') or '-':>13} {r['time_ratio'] or float('nan'):>10.2f}"
        if gpu:
            line += f" {r['jaxkd_tflops_per_s'] or float('nan'):>8.1f} {r['mfu'] or float('nan'):>6.1%}"
        lines.append(line)
    lines.append(f"(time_ratio = jaxkd step time / the best torch variant's step time, < 1: jaxkd faster; "
                 f"{meta['host_devices']} XLA host device(s), {meta['precision']}; torch AdamW "
                 f"{meta.get('torch_optim', '-')})")
    if gpu and meta.get("assumed_peak_flops"):
        lines.append(f"(MFU = XLA cost-analysis FLOPs / step time / an ASSUMED peak of "
                     f"{meta['assumed_peak_flops'] / 1e12:.0f} TFLOP/s, {meta['assumed_peak_source']})")
    if notes:
        lines += ["failed variants:"] + notes
    return "\n".join(lines)


def print_comparison(results: list[dict]) -> None:
    names = list(results[0]["models"])
    head = f"{'model':<34}" + "".join(f" {'ratio @' + str(r['meta']['host_devices']) + ' dev':>13}" for r in results)
    print("\n" + head + "\n" + "-" * len(head))
    for n in names:
        print(f"{results[0]['models'][n]['model']:<34}" +
              "".join(f" {r['models'][n].get('time_ratio') or float('nan'):>13.2f}" for r in results))
