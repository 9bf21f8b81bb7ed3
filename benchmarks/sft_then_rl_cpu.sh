#!/usr/bin/env bash
# Demonstrations -> behaviour cloning -> PPO on rlinf/ManiSkill-PickCube (state, pd_ee_delta_pos), CPU only.
# The state-only version of the VLA recipe in sft_then_rl_gpu.sh: the same commands, an mlp policy.
#   bash benchmarks/sft_then_rl_cpu.sh collect 50     # motion-planner demonstrations
#   bash benchmarks/sft_then_rl_cpu.sh sft 2000       # BC (Gaussian NLL), joint velocities hidden from the actor;
#                                                     # SAVE_INTERVAL=500 keeps checkpoints/step_XXXXXX to pick a start
#   bash benchmarks/sft_then_rl_cpu.sh rl 40          # PPO from the BC checkpoint, eval every 5 iterations
#   bash benchmarks/sft_then_rl_cpu.sh table          # success of the BC start and along the RL run
# POLICY=flow_mlp runs the flow-matching version (the VLA recipe's sampler and chain log-probs on a state MLP):
#   POLICY=flow_mlp EVAL_INTERVAL=500 SAVE_INTERVAL=500 bash benchmarks/sft_then_rl_cpu.sh sft 3000  # chunks of 4
#   POLICY=flow_mlp ROLLOUT_STEPS=25 bash benchmarks/sft_then_rl_cpu.sh rl 100 policy.overrides.noise_level=0.5
# Every stage runs $PYTHON (default python3): PYTHON=.venv/bin/python uses a venv that is not activated.
set -euo pipefail
WORK=${WORK:-/tmp/sft_then_rl_cpu}
ENV_ARGS=(env=maniskill_pickcube env.kwargs.control_mode=pd_ee_delta_pos env.max_episode_steps=100)
POLICY=${POLICY:-mlp}
# The joint velocities 9-17 are hidden from the actor (the copycat fix); the key differs between policy kinds.
case $POLICY in
  mlp) IGNORE_KEY=actor_ignore_state_dims
    # init_log_std resets the NLL-fitted std (about 0.2) that makes the BC policy's stochastic rollouts fail
    RL_NOISE=(policy.overrides.init_log_std=${INIT_LOG_STD:--2.5}) ;;
  flow_mlp) IGNORE_KEY=ignore_state_dims; RL_NOISE=() ;;  # exploration: noise_method / noise_level overrides
  *) echo "POLICY=$POLICY: this recipe runs mlp or flow_mlp (state observations)"; exit 2 ;;
esac
stage=$1; shift
case $stage in
  collect)
    "${PYTHON:-python3}" -m rlinf_embodied.collect "${ENV_ARGS[@]}" collect.output_dir=$WORK/data collect.num_episodes=${1:-50} \
      collect.num_workers=2 collect.max_episode_steps=100 collect.seed=${SEED:-0} hydra.run.dir=$WORK/collect_run ;;
  sft)
    steps=${1:-2000}; shift || true
    "${PYTHON:-python3}" -m rlinf_embodied.sft "${ENV_ARGS[@]}" policy=$POLICY \
      "policy.overrides.$IGNORE_KEY=[9,10,11,12,13,14,15,16,17]" sft.dataset=$WORK/data \
      sft.max_steps=$steps sft.batch_size=256 sft.lr=1e-3 sft.eval_interval=${EVAL_INTERVAL:-1000} \
      sft.save_interval=${SAVE_INTERVAL:-0} sft.eval_episodes=50 sft.output_dir=$WORK/sft hydra.run.dir=$WORK/sft "$@" ;;
  rl)
    iterations=${1:-40}; shift || true
    # the critic's warm-up is for PPO's default GAE (it reads a critic); with an algorithm group given
    # (algorithm=grpo: no critic, and AlgorithmConfig rejects a warm-up there) it is off unless WARMUP says
    case " $* " in *" algorithm="*) warmup=${WARMUP:-0} ;; *) warmup=${WARMUP:-3} ;; esac
    # ROLLOUT_STEPS: policy calls per iteration, one 100-step episode (25 with flow_mlp's chunk of 4)
    "${PYTHON:-python3}" -m rlinf_embodied.train "${ENV_ARGS[@]}" env.ignore_terminations=true env.num_envs=${NUM_ENVS:-32} \
      runner.rollout_steps=${ROLLOUT_STEPS:-100} policy=$POLICY policy.checkpoint=${CKPT:-$WORK/sft/checkpoints/best/policy} \
      "${RL_NOISE[@]}" algorithm.update_epochs=${EPOCHS:-4} \
      algorithm.num_minibatches=8 algorithm.lr=${LR:-3e-5} algorithm.critic_warmup_iterations=$warmup \
      runner.max_iterations=$iterations runner.eval_interval=5 runner.eval_rounds=2 \
      runner.output_dir=$WORK/rl${TAG:-} hydra.run.dir=$WORK/rl${TAG:-} "$@" ;;
  table)
    "${PYTHON:-python3}" - "$WORK" <<'EOF'
import json, sys, glob, os
work = sys.argv[1]
sft = [json.loads(l) for l in open(f"{work}/sft/metrics.jsonl")]
print("| stage | step / iteration | env steps | eval success_once |")
print("|---|---:|---:|---:|")
for row in sft:
    if "eval/success_once" in row:
        print(f"| BC | {row.get('step', '')} | - | {row['eval/success_once']:.2f} |")
for path in sorted(glob.glob(f"{work}/rl*/metrics.jsonl")):
    for row in map(json.loads, open(path)):
        if "eval/success_once" in row:
            name = os.path.basename(os.path.dirname(path))
            print(f"| PPO ({name}) | {row['iteration']} | {row['time/env_steps']} | {row['eval/success_once']:.2f} |")
EOF
    ;;
  *) echo "unknown stage $stage: collect | sft | rl | table"; exit 2 ;;
esac
