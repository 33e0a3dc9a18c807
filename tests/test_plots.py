"""`dvc plots show` renders offline: the page inlines vega (no CDN) and draws every plot of dvc.yaml."""

import csv
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows([header, *rows])


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway repo with the real dvc.yaml, .dvc/config and templates, tiny CSVs, and the rendered page."""
    repo = tmp_path_factory.mktemp("plots_repo")
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    (repo / ".dvc").mkdir()
    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")
    shutil.copytree(ROOT / ".dvc" / "plots", repo / ".dvc" / "plots")
    shutil.copytree(ROOT / "plots", repo / "plots")
    # an older run: no sim_* columns (their plot is skipped, the others must still render)
    write_csv(repo / "artifacts/train/loss.csv", ["step", "epoch", "total", "margin_mse", "listwise_kl", "in_batch", "learning_rate"],
              [[s, 1 + s // 5, 3 - 0.2 * s, 2 - 0.1 * s, 0.7 - 0.05 * s, 0.3 - 0.01 * s, 2e-5] for s in range(10)])  # fmt: skip
    write_csv(repo / "artifacts/train/dev.csv", ["epoch", "dev_ndcg@10"], [[0, 0.55], [1, 0.6], [2, 0.62]])
    systems = [("bm25", 0.25), ("untrained", 0.57), ("kd", 0.61), ("teacher", 0.66)]
    write_csv(repo / "artifacts/eval/table.csv", ["split", "system", "nDCG@10", "MRR@10", "Recall@100"],
              [[split, name, v, v, 0.9] for split in ("dev", "test") for name, v in systems])  # fmt: skip
    write_csv(repo / "bench/results/ablation.csv", ["variant", "seed", "dev_ndcg@10"],
              [[v, s, 0.6 + 0.01 * i + 0.002 * s] for i, v in enumerate(("default", "no_kl")) for s in range(3)])  # fmt: skip
    write_csv(repo / "bench/results/frontier_plot.csv", ["system", "query_p50_ms", "ndcg@10", "split", "data"],
              [["static_asym (python_docs_faq, test)", 0.2, 0.55, "test", "python_docs_faq"],
               ["teacher (python_docs_faq, test)", 30.0, 0.65, "test", "python_docs_faq"]])  # fmt: skip
    subprocess.run(["git", "init", "-q", "."], cwd=repo, check=True)
    out = subprocess.run(["dvc", "plots", "show", "-o", "out"], cwd=repo, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return repo / "out" / "index.html"


def test_page_is_self_contained_and_holds_the_data(page: Path) -> None:
    html = page.read_text(encoding="utf8")
    assert not re.search(r"<script[^>]*\bsrc\s*=", html), "a <script src=...> would need the network"
    assert "cdn.jsdelivr" not in html
    for lib in ("/* vega ", "/* vega-lite ", "/* vega-embed "):
        assert lib in html, f"{lib} not inlined"
    assert "function vegaEmbed" in html or "vegaEmbed=" in html
    assert "{plot_divs}" not in html
    for title in ("training loss per component", "dev nDCG@10 per epoch", "nDCG@10 per system, dev and test",
                  "ablation, dev nDCG@10 per variant", "frontier, nDCG@10 against query-encode latency"):  # fmt: skip
        assert title in html, title
    assert '"system": "teacher"' in html and '"split": "dev"' in html and '"variant": "no_kl"' in html
    assert '"query_p50_ms": "0.2"' in html or '"query_p50_ms": 0.2' in html  # the frontier's points


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium: `apt-get install -y chromium` for the headless render check")
def test_page_renders_offline_in_headless_chromium(page: Path, tmp_path: Path) -> None:
    """The page, opened with no network access to anything, draws charts (not a blank page)."""
    assert CHROMIUM is not None
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", page.as_uri()]  # fmt: skip
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=300).stdout
    n_charts = len(re.findall(r'<canvas|<svg[^>]*class="marks"', dom))
    assert n_charts >= 4, f"expected >= 4 rendered charts, found {n_charts}"
    shot = tmp_path / "page.png"
    subprocess.run([*cmd[:-2], f"--screenshot={shot}", "--window-size=1200,1600", page.as_uri()],
                   capture_output=True, timeout=300)  # fmt: skip
    from PIL import Image

    img = Image.open(shot).convert("L")
    dark = sum(1 for px in img.getdata() if px < 200)
    assert dark > 0.01 * img.width * img.height, f"page looks blank: {dark} non-white pixels"
