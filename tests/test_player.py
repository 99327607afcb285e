"""Replay pacing: the Player with an injected clock (no sleeping, no Qt)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_file
from iousguide.acquisition.player import Player
from iousguide.errors import SettingsError


def run(player: Player, start_s: float, stop_s: float, step_s: float = 0.001) -> list[tuple[float, int]]:
    """Poll due_frame on a fake clock; return (time, index) of every frame handed out."""
    shown = []
    for now in np.arange(start_s, stop_s, step_s):
        index = player.due_frame(float(now))
        if index is not None:
            shown.append((float(now), index))
    return shown


def test_first_frame_is_due_at_once_even_paused():
    player = Player([0.0, 0.1, 0.2])
    assert player.due_frame(5.0) == 0
    assert player.due_frame(6.0) is None  # paused: nothing more


def test_realtime_pacing_follows_variable_frame_times():
    times = np.array([10.0, 10.016, 10.100, 10.184, 10.200, 10.300])  # 16-100 ms intervals, absolute origin
    player = Player(times)
    player.play(now_s=100.0)
    shown = run(player, 100.0, 100.5)
    indices = [i for _, i in shown]
    assert indices == [0, 1, 2, 3, 4, 5]
    relative = times - times[0]
    for (t, i) in shown:
        # each frame is handed out within one clock tick of its own time
        assert t - 100.0 == pytest.approx(relative[i], abs=0.0015)
    assert player.skipped == 0


def test_speed_factor_scales_wall_time():
    times = np.arange(10) * 0.1
    for speed in (0.25, 2.0, 4.0):
        player = Player(times, speed=speed)
        player.play(now_s=0.0)
        shown = run(player, 0.0, 1.0 / speed + 0.05, step_s=0.0005)
        assert [i for _, i in shown] == list(range(10))
        t_last, _ = shown[-1]
        assert t_last == pytest.approx(0.9 / speed, abs=0.002)


def test_speed_change_mid_play_keeps_media_time():
    player = Player(np.arange(100) * 0.1)
    player.play(now_s=0.0)
    run(player, 0.0, 1.0)
    assert player.index == 9
    player.set_speed(4.0, now_s=1.0)
    assert player.media_time_s(1.0) == pytest.approx(1.0)
    assert player.media_time_s(1.5) == pytest.approx(3.0)
    with pytest.raises(SettingsError):
        player.set_speed(8.0, now_s=1.5)
    with pytest.raises(SettingsError):
        Player([0.0, 1.0], speed=0.1)


def test_slow_caller_skips_frames_and_counts_them():
    player = Player(np.arange(30) / 30.0)
    player.play(now_s=0.0)
    assert player.due_frame(0.0) == 0
    assert player.due_frame(0.5) == 15  # 0.5 s later: frame 15 is due, 1..14 skipped
    assert player.skipped == 14


def test_pause_holds_and_resume_continues_from_same_frame():
    player = Player(np.arange(10) * 0.1)
    player.play(now_s=0.0)
    run(player, 0.0, 0.35)
    assert player.index == 3
    player.pause(now_s=0.35)
    assert run(player, 0.35, 5.0) == []
    player.play(now_s=5.0)
    shown = run(player, 5.0, 5.25)
    assert [i for _, i in shown] == [4, 5]
    assert shown[0][0] == pytest.approx(5.05, abs=0.0015)  # frame 4 at 0.4 s media = 0.05 s after resuming


def test_step_pauses_and_clamps():
    player = Player(np.arange(5) * 0.1)
    player.play(now_s=0.0)
    player.due_frame(0.0)
    assert player.step(+1, now_s=0.01) == 1
    assert not player.playing
    assert player.due_frame(0.02) == 1
    assert player.due_frame(1.0) is None
    assert player.step(-3, now_s=1.0) == 0
    assert player.step(+99, now_s=1.0) == 4


def test_seek_index_and_time():
    times = np.array([0.0, 0.05, 0.30, 0.31, 1.0])
    player = Player(times)
    assert player.seek(3, now_s=0.0) == 3
    assert player.due_frame(0.0) == 3
    assert player.seek_time(0.29, now_s=0.0) == 1  # last frame at or before 0.29 s
    assert player.seek_time(0.30, now_s=0.0) == 2
    assert player.seek_time(99.0, now_s=0.0) == 4
    assert player.seek_time(-1.0, now_s=0.0) == 0


def test_end_without_loop_stops_and_play_restarts():
    player = Player(np.arange(4) * 0.1)
    player.play(now_s=0.0)
    shown = run(player, 0.0, 1.0)
    assert [i for _, i in shown] == [0, 1, 2, 3]
    assert player.ended and not player.playing
    player.play(now_s=2.0)
    assert player.due_frame(2.0) == 0


def test_loop_wraps_around():
    player = Player(np.arange(4) * 0.1, loop=True)  # duration 0.4 s
    player.play(now_s=0.0)
    shown = run(player, 0.0, 0.85)
    assert [i for _, i in shown] == [0, 1, 2, 3, 0, 1, 2, 3, 0]
    assert not player.ended


def test_as_fast_as_possible_mode():
    player = Player(np.arange(5) * 10.0, realtime=False)
    player.play(now_s=0.0)
    got = [player.due_frame(0.0) for _ in range(7)]
    assert got == [0, 1, 2, 3, 4, None, None]
    assert player.ended


def test_next_due_in_s():
    player = Player([0.0, 0.1, 0.3])
    assert player.next_due_in_s(0.0) == 0.0  # first frame pending
    player.due_frame(0.0)
    assert player.next_due_in_s(0.0) is None  # paused
    player.play(now_s=0.0)
    assert player.next_due_in_s(0.04) == pytest.approx(0.06)
    player.set_speed(2.0, now_s=0.04)
    assert player.next_due_in_s(0.04) == pytest.approx(0.03)


def test_rejects_bad_times():
    with pytest.raises(SettingsError):
        Player([])
    with pytest.raises(SettingsError):
        Player([0.0, 0.2, 0.1])


def test_player_over_real_variable_rate_recording():
    from iousguide.acquisition import open_source

    path = shared_file("liver_sweep/liver_sweep_imfusion_h264.mp4")
    with open_source(path) as source:
        player = Player.from_source(source)
        times = source.relative_times_s()
    assert player.frames == 140
    player.play(now_s=0.0)
    shown = run(player, 0.0, player.duration_s + 0.1, step_s=0.002)
    assert [i for _, i in shown] == list(range(140))
    errors = [t - times[i] for t, i in shown]
    assert max(abs(e) for e in errors) <= 0.0021  # every frame at its own presentation time
