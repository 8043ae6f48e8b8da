"""
``sb3-safeq record_video``: rl-zoo3's ``record_video`` (same options) for safeq, ppo_mask and every registered
baseline, acting inside the safe support as ``sb3-safeq enjoy`` does.

The environment renders ``rgb_array`` frames (no window, no pygame for environments that draw their own frames) and
SB3's ``VecVideoRecorder`` encodes them with moviepy into ``<folder>/<name>-step-0-to-step-<n>.mp4``, by default in
the run's ``videos/`` folder. Models whose ``predict`` takes the safe support receive it (``--no-support`` replays the
policy on its own); the unsafe visits of the recorded episodes are reported.
"""

import os

from stable_baselines3.common.vec_env import VecVideoRecorder

from sb3_safeq.zoo.enjoy import _parser, load_trained_model, print_summary, replay
from sb3_safeq.zoo.errors import ZooUsageError
from sb3_safeq.zoo.registration import register_algos


def record_video(argv: list[str]) -> None:
    """
    Record a video of a trained model.

    :param argv: the arguments after ``record_video`` (``python -m rl_zoo3.record_video``'s options)
    """
    register_algos()
    parser = _parser("sb3-safeq record_video", __doc__)
    parser.add_argument("-o", "--output-folder", help="where to write the video (default: the run's videos/)", type=str)
    parser.set_defaults(no_render=True)  # frames are drawn for the recorder, never in a window
    args = parser.parse_args(argv)
    loaded = load_trained_model(args, render_mode="rgb_array")
    render_modes = loaded.env.get_attr("render_mode")[0]
    if render_modes != "rgb_array":
        loaded.env.close()
        raise ZooUsageError(f"{args.env.gym_id} does not render rgb_array frames (render_mode={render_modes!r}).")
    video_folder = args.output_folder or os.path.join(loaded.log_path, "videos")
    env = VecVideoRecorder(
        loaded.env,
        video_folder,
        record_video_trigger=lambda step: step == 0,
        video_length=args.n_timesteps,
        name_prefix=loaded.name,
    )
    try:
        played = replay(
            loaded.model,
            env,
            args.n_timesteps,
            deterministic=loaded.deterministic,
            use_masks=loaded.use_masks,
            verbose=args.verbose,
            progress=args.progress,
        )
    finally:
        env.close()
    print_summary(played, loaded.use_masks)
    print(f"Video saved in {video_folder}")
