#!/usr/bin/env bash
# Train PPO + MLP on PushCube (state, the default env of train and eval) for a few iterations on CPU, then evaluate the checkpoint.
set -euo pipefail
out=${1:-outputs/example}
python -m rlinf_embodied.train runner.max_iterations=5 env.num_envs=8 runner.output_dir="$out" hydra.run.dir="$out"
checkpoint=$(ls -d "$out"/checkpoints/iteration_*/policy | tail -n 1)
python -m rlinf_embodied.eval policy.checkpoint="$checkpoint" eval.num_episodes=8 eval.output_dir="$out/eval" \
    hydra.run.dir="$out/eval"
