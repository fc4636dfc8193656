"""bench.capacity against one example worked by hand (docs/deployment.md, "Capacity model")."""

from __future__ import annotations

import pytest

from bench.capacity import GIB, Costs, Load, main, plan, ram_per_point


def test_hand_worked_web_search_example() -> None:
    # S = 10 web searches/s, M = 1M, C = 100, h = 0.5, the default costs. By hand:
    p = plan(Load(searches_s=10, gallery_size=1e6, web_share=1.0, candidates=100, hit_rate=0.5), Costs())
    assert p.images_s == pytest.approx(510)  # 10 x (1 query + 100 x 0.5 new candidates)
    assert p.embed_pod_img_s == pytest.approx(800)  # min(GPU 6000, 6 workers x 1000 / 7.5 ms decode)
    assert p.embed_pod_limit == "CPU decode"
    assert p.embed_pods == 2  # 510 / (800 x 0.7) = 0.91 -> 1, raised to the minimum of 2
    assert p.downloads_s == pytest.approx(500)
    assert p.gateway_cpu == pytest.approx(1.75)  # (10 x 25 ms + 500 x 3 ms) / 1000
    assert (p.gateway_pods_cpu, p.gateway_pods_downloads, p.gateway_pods) == (2, 8, 8)  # 1.75 / 1.4; 500 x 0.5 / 32
    assert p.outbound_mib_s == pytest.approx(500 * 230 / 1024)
    assert p.ram_per_point == pytest.approx(4288)  # (512 x 4 + 2 x 16 x 4) x 1.5 + 1024
    assert p.store_ram_gib == pytest.approx(1e6 * 4288 * 2 / GIB)
    assert p.store_nodes_ram == 2  # 8.0 GiB / (8 GiB x 0.75)
    # (10 ANN + 1000 lookups x 0.1) / 600 + 500 writes x 2 replicas / 2000 = 0.683 busy -> 1 peer
    assert p.store_nodes_load == 1
    assert p.store_nodes == 3  # Raft's minimum
    assert p.bottleneck == "outbound downloads"
    assert p.bottleneck_ratio == pytest.approx(250 / 64)  # 250 in flight against 2 pods x 32


def test_gallery_only_search_embeds_one_image_and_downloads_nothing() -> None:
    p = plan(Load(searches_s=100, gallery_size=1e5, web_share=0.0), Costs())
    assert p.images_s == pytest.approx(100)
    assert p.downloads_s == 0 and p.store_lookups_s == 0 and p.store_writes_s == 0
    assert p.gateway_cpu == pytest.approx(2.5)  # 100 x 25 ms: the upload's decode dominates


def test_quantized_copies_in_ram() -> None:
    assert ram_per_point(Costs(quantization="scalar")) == pytest.approx((512 + 128) * 1.5)
    assert ram_per_point(Costs(quantization="binary")) == pytest.approx((64 + 128) * 1.5)


def test_command_prints_the_table_and_refuses_a_bad_hit_rate(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--searches", "10", "--gallery-size", "1e6", "--web-share", "1", "--hit-rate", "0.5"])
    out = capsys.readouterr().out
    assert "| 10 | 1M | 100% | 510 | 2 | 8 (2 / 8) |" in out
    with pytest.raises(SystemExit):
        main(["--hit-rate", "1.5"])
    assert "must be between 0 and 1" in capsys.readouterr().err
