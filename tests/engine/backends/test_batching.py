"""Which waiting jobs share the head job's call (engine/backends/batching.py); the renders themselves are in
test_worker."""

from __future__ import annotations

from engine.backends.batching import GatherWindow, chunk_counter, fill, next_batch, same_call
from engine.request import GenerationRequest


class Job:
    def __init__(self, name: str, seq: int, **settings) -> None:
        self.id, self.seq, self.chunks, self.arrived = name, seq, {}, 0.0
        self.request = GenerationRequest(name, **{"steps": 4, "width": 64, "height": 64, **settings})


def test_only_jobs_with_the_same_settings_that_fit_share_the_call():
    head = Job("head", 0)
    queue = [
        Job("same", 1),
        Job("bigger", 2, width=128),
        Job("two", 3, batch_size=2),
        Job("cfg", 4, cfg_scale=3),
        Job("also", 5),
    ]
    assert [j.id for j in same_call(head, queue, budget=3)] == ["same", "two", "also"]
    assert [j.id for j in same_call(head, queue, budget=1)] == ["same", "also"]


def test_inpaint_jobs_share_a_call_only_with_the_same_start_image_mask_and_controls():
    inpaint = {"init_image": "a.png", "mask": "m.png"}
    head = Job("head", 0, **inpaint)
    queue = [
        Job("same", 1, **inpaint),
        Job("other mask", 2, init_image="a.png", mask="n.png"),
        Job("blur", 3, **inpaint, mask_blur=8),
        Job("only masked", 4, **inpaint, inpaint_area="masked"),
        Job("img2img", 5, init_image="a.png"),
        Job("outpaint", 6, init_image="a.png", outpaint="0,0,64,0"),
        Job("also", 7, **inpaint),
    ]
    assert [j.id for j in same_call(head, queue, budget=4)] == ["same", "also"]


def test_fill_takes_jobs_in_queue_order_until_the_images_run_out():
    queue = [Job("a", 1), Job("b", 2, batch_size=2), Job("c", 3), Job("d", 4)]
    assert [j.id for j in fill(queue, {"a", "b", "c", "d"}, budget=3)] == ["a", "b"]
    assert [j.id for j in fill(queue, {"b", "c", "d"}, budget=3)] == ["b", "c"]
    assert [j.id for j in fill(queue, {"c"}, budget=3)] == ["c"]


class Encoder:
    def __init__(self) -> None:
        self.calls = 0

    def chunk_count(self, text: str) -> int:
        self.calls += 1
        if "broken" in text:
            raise ValueError("does not tokenize")
        return 1 + len(text) // 100


def test_chunks_are_counted_once_per_checkpoint_and_a_broken_prompt_batches_with_nothing():
    encoder = Encoder()
    count = chunk_counter(encoder, "model-a")
    short, long, broken = Job("a cat", 1), Job("a cat " * 40, 2), Job("broken", 3)
    assert (count(short), count(long)) == (1, 3)
    calls = encoder.calls
    assert count(short) == 1 and encoder.calls == calls  # kept on the job
    assert count(broken) == -1 - broken.seq != count(Job("broken", 4))
    assert chunk_counter(encoder, "model-b")(short) == 1 and set(short.chunks) == {"model-a", "model-b"}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_next_batch_is_the_head_and_its_compatible_followers_in_start_order():
    queue = [Job("head", 0), Job("bigger", 1, width=128), Job("two", 2, batch_size=2), Job("a", 3), Job("b", 4)]
    assert [j.id for j in next_batch(queue, max_batch=4)] == ["head", "two", "a"]
    assert [j.id for j in next_batch(queue[1:], max_batch=4)] == ["bigger"]
    assert [j.id for j in next_batch([Job("four", 0, batch_size=4), *queue], max_batch=4)] == ["four"]


def test_a_job_alone_waits_the_window_from_its_arrival_and_no_longer():
    clock = Clock()
    window = GatherWindow(50, max_batch=4, clock=clock)
    alone = [Job("alone", 0)]
    assert window.remaining(alone) == 0.05
    clock.now = 0.03
    assert abs(window.remaining(alone) - 0.02) < 1e-9
    clock.now = 0.05
    assert window.remaining(alone) == 0.0
    clock.now = 7.0  # it waited behind a render: it starts at once
    assert window.remaining(alone) == 0.0


def test_each_companion_that_comes_gives_the_batch_another_window():
    clock = Clock()
    window = GatherWindow(50, max_batch=4, clock=clock)
    head, companion, stranger = Job("head", 0), Job("companion", 1), Job("stranger", 2, width=128)
    companion.arrived = stranger.arrived = 0.04
    clock.now = 0.045
    assert abs(window.remaining([head, stranger]) - 0.005) < 1e-9  # not a companion: the head's own window
    assert abs(window.remaining([head, companion, stranger]) - 0.045) < 1e-9
    clock.now = 0.09
    assert window.remaining([head, companion, stranger]) == 0.0


def test_a_full_batch_never_waits_and_a_window_of_zero_never_waits():
    clock = Clock()
    window = GatherWindow(50, max_batch=4, clock=clock)
    three = [Job("a", 0), Job("b", 1), Job("c", 2)]
    assert window.remaining(three) == 0.05
    assert window.remaining([*three, Job("other size", 3, width=128)]) == 0.05  # not a companion
    assert window.remaining([*three, Job("d", 4)]) == 0.0
    assert window.remaining([Job("four", 0, batch_size=4)]) == 0.0
    assert GatherWindow(0, max_batch=4, clock=clock).remaining(three) == 0.0
    assert GatherWindow(50, max_batch=1, clock=clock).remaining(three) == 0.0  # batching off
