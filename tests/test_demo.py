"""`vidsearch demo` through the real CLI, and the sample clip it is made from."""

import json
from importlib.resources import files

import pytest


@pytest.fixture(scope="module")
def demo(tmp_path_factory, tiny_model, vs):
    d = tmp_path_factory.mktemp("demo")
    return d, vs("demo", "--dir", d, "--model", tiny_model)


def test_demo_finds_the_excerpt_and_groups_the_copies(demo):
    d, r = demo
    assert r.exit_code == 0, r.output
    lib = d / "library"
    copies = {str(lib / n) for n in ("bigbuckbunny.mp4", "bigbuckbunny-recut.mp4", "bigbuckbunny-titled.mp4")}
    assert sorted(p.name for p in lib.iterdir()) == [
        "bigbuckbunny-recut.mp4",
        "bigbuckbunny-titled.mp4",
        "bigbuckbunny.mp4",
        "synthetic-1.mp4",
        "synthetic-2.mkv",
        "synthetic-with-excerpt.mp4",
    ]
    lines = r.output.splitlines()
    # search, printed as `vidsearch search` prints it: the first result holds the query's footage
    first = lines[lines.index(f"query {d / 'query-excerpt.mp4'} [0.0-4.0s], 3 clips") + 1]
    assert first.startswith("  1. ") and first.split()[-1] in copies
    # dupes --groups, printed as `vidsearch dupes --groups` prints it: the three whole copies, and
    # nothing else (the 3 s excerpt is shorter than the 4 s a duplicate's match must last)
    at = lines.index("1 duplicate group(s) at threshold 0.9 (default)")
    assert lines[at + 1] == "group 1: 3 videos"
    assert {line.split()[-1] for line in lines[at + 2 : at + 5]} == copies
    assert lines[at + 5] == "(* the longest video, likely the original)"
    # the commands to run next, on the index left in the folder
    assert lines[-3:] == [
        f"  vidsearch search {d / 'query-excerpt.mp4'} --index {d / 'index'}",
        f"  vidsearch dupes --groups --index {d / 'index'}",
        f"  vidsearch serve --index {d / 'index'}",
    ]


def test_the_index_is_left_to_go_on_with(demo, vs):
    d, r = demo
    assert r.exit_code == 0, r.output
    s = vs("search", d / "query-excerpt.mp4", "--index", d / "index", "--json")
    assert s.exit_code == 0, s.output
    results = json.loads(s.stdout)["queries"][0]["results"]
    assert len(results) == 6
    assert results[0]["path"] in {str(d / "library" / n) for n in ("bigbuckbunny.mp4", "bigbuckbunny-titled.mp4")}
    g = vs("dupes", "--groups", "--format", "json", "--index", d / "index")
    assert g.exit_code == 0, g.output
    groups = json.loads(g.stdout)["groups"]
    copies = ("bigbuckbunny-recut.mp4", "bigbuckbunny-titled.mp4", "bigbuckbunny.mp4")
    assert [sorted(v["path"] for v in grp["videos"]) for grp in groups] == [[str(d / "library" / n) for n in copies]]


def test_a_second_run_in_the_same_folder_reuses_the_index(demo, tiny_model, vs):
    d, _ = demo
    r = vs("demo", "--dir", d, "--model", tiny_model)
    assert r.exit_code == 0, r.output
    assert "indexed 0 videos (0 clips)" in r.output and "; 6 were indexed already" in r.output


def test_the_sample_clip_ships_with_its_attribution():
    import av

    data = files("vidsearch") / "data"
    clip = data / "bigbuckbunny.mp4"
    assert clip.is_file() and len(clip.read_bytes()) < 1_500_000
    with av.open(clip.open("rb")) as c:
        s = c.streams.video[0]
        assert (s.codec_context.name, s.width, s.height, s.average_rate) == ("h264", 1280, 720, 25)
        assert sum(1 for _ in c.decode(s)) == 132
    attribution = (data / "ATTRIBUTION.txt").read_text()
    assert "Big Buck Bunny" in attribution and "Blender Foundation" in attribution
    assert "CC BY 3.0" in attribution and "https://creativecommons.org/licenses/by/3.0/" in attribution
