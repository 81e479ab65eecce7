"""Training: the plain loop and the trainer around it (imports only minigpt/; no argparse).

    loop.py           the plain loop: forward, loss, backward, clip, step, schedule (train_epoch, epoch_plan)
    trainer.py        train(): the loop with resume, best-k checkpoints, RNG state, AMP, DDP, early stopping
    config.py         TrainConfig: every setting of a run and the flags made from it
    optimization.py   the optimizer and learning-rate schedule the settings name
    course_adamw.py   the course's AdamW (--protocol course)
    progress.py       where a run stands (saved in last.pt) and what train() returns
    evaluation.py     the dev evaluation at an epoch's end
    nan_guard.py      never step on, nor save, NaN or infinite values
    model_switches.py --gradient-checkpointing and --compile, thrown on the model being trained
    checkpointing.py  the run's files: last.pt, best-epoch*.pt, metrics.jsonl, result.json
    run_settings.py   what defines a run, so that --resume continues the same one
    out_dir.py        the output directory: one run at a time (a lock), and what a run may write over
    distributed.py    torchrun's processes: rank, device, collective operations
"""
