"""The embedder runs only a few input shapes, whatever the texts."""

import random

from engines.shape_buckets import bucket_length, bucket_rows, plan_sub_batches


def test_lengths_pad_up_to_a_multiple_of_the_step_and_stop_at_the_model_maximum():
    assert [bucket_length(n, 256) for n in (1, 31, 32, 33, 200, 250, 256, 300)] == [
        32,
        32,
        32,
        64,
        224,
        256,
        256,
        256,
    ]
    assert bucket_length(130, 128) == 128


def test_a_short_batch_pads_its_rows_to_a_power_of_two_and_a_full_one_stays_full():
    assert [bucket_rows(n, 32) for n in (1, 2, 3, 5, 17, 31, 32)] == [1, 2, 4, 8, 32, 32, 32]


def test_any_mix_of_texts_runs_in_a_few_dozen_shapes_that_cover_every_input():
    rng = random.Random(7)
    shapes = set()
    for _ in range(300):
        lengths = [rng.randint(3, 400) for _ in range(rng.randint(1, 300))]
        batches = plan_sub_batches(lengths, 32, 256)
        assert sorted(i for batch in batches for i in batch.indices) == list(range(len(lengths)))
        for batch in batches:
            longest = max(min(lengths[i], 256) for i in batch.indices)
            assert longest <= batch.length and len(batch.indices) <= batch.rows <= 32
            shapes.add((batch.rows, batch.length))
    assert len(shapes) <= 6 * 8


def test_the_longest_texts_run_first_so_each_sub_batch_pads_only_to_its_own_longest():
    batches = plan_sub_batches([10, 200, 12, 190, 11, 205], 2, 256)
    assert [sorted(batch.indices) for batch in batches] == [[1, 5], [2, 3], [0, 4]]
    assert [batch.length for batch in batches] == [224, 192, 32]
