#!/usr/bin/env bash
# Demonstrations -> SFT -> RL of a VLA on rlinf/ManiSkill-PickCube (rgb + instruction), one GPU host.
# Stages run separately (each device call must end within 10 minutes); state lives under $WORK, which a
# warm device machine keeps between calls. Results (metrics, tables) are copied to $OUT when set.
#   bash benchmarks/sft_then_rl_gpu.sh collect 200     # motion-planner demonstrations, 96 px cameras
#   bash benchmarks/sft_then_rl_gpu.sh sft 3000        # pi0-small flow-matching SFT (+ eval)
#   SFT_INIT=<ckpt>/policy bash ... sft 3000           # SFT that continues from a saved checkpoint
#   EMA=0.999 bash ... sft 3000                         # checkpoints hold an EMA of the weights
#   LR_SCHEDULE=constant LR=2e-4 bash ... sft 4000      # no decay (stop 26: the cosine's low-lr end scored 2.5%)
#   STOP_AT=0.3 EVAL_INTERVAL=1000 bash ... sft 6000   # stop at the first evaluation with >= 30% success
#   VAL_EPISODES=40 WEIGHT_DECAY=0.05 bash ... sft 6000  # sft/val_loss on 40 held-out demos; AdamW decay
#   COMPILE=1 bash ... sft 6000                         # sft.compile: torch.compile'd layers (a minute to compile)
#   COMPILE=1 BATCH=1024 bash ... sft 6000              # H200 (stop 39): the compiled step is host-bound, so batch
#                                  # 1024 costs 0.128 s like 512 (eager 0.246 s): 1.92x the samples/s (RESULTS.md)
#   bash benchmarks/sft_then_rl_gpu.sh eval            # 200 held-out episodes of the SFT checkpoint
#   bash benchmarks/sft_then_rl_gpu.sh rl 20           # RL (RL_RECIPE_ARGS below: GRPO) from the SFT checkpoint
#   CKPT=<ckpt>/policy RL_SECONDS=900 bash ... rl_eval  # RL for 900 s, then 200 held-out episodes of its result
#   bash benchmarks/sft_then_rl_gpu.sh pick            # the SFT checkpoint with eval success in [20%, 70%]
#   CKPT=<ckpt>/policy NOISE_EPISODES=96 bash ... noise_evals 0.5 0.35 0.2   # stochastic success per noise level
#   NOISE_RATIO=0.9 bash ... noise 0.5 0.35 0.2        # the largest level keeping 90% of eval_sft's success
#   SFT_SEEDS="0 1 2" ... pipeline 1600               # three SFT runs at once (one per seed), pick across them
#   SFT_SEEDS="0 1" COMPILE_SEEDS=0 ... pipeline 1200   # seed 0 with sft.compile, seed 1 eager, side by side
#   bash benchmarks/sft_then_rl_gpu.sh bench           # SFT steps/s (benchmarks/sft_throughput.py) -> $WORK
#   setsid bash benchmarks/sft_then_rl_gpu.sh pipeline 400 > $WORK/pipeline.log 2>&1 &
#                                  # all stages in one go, outliving the device call that starts it
#   SKIP_RL=1 ... pipeline 800     # collect, SFT, pick, evaluate (and the noise-level check), no RL
#   NOISE_LEVELS= SFT_EVAL_BESIDE_RL=1 ... pipeline 800 policy.overrides.noise_level=0.5
#                                  # a known noise level, and RL starts beside the SFT checkpoint's evaluation
# Every stage runs $PYTHON (default python3): PYTHON=.venv/bin/python uses a venv that is not activated.
set -euo pipefail
WORK=${WORK:-/tmp/work}
POLICY=${POLICY:-pi0}
SIZE=${SIZE:-pi0-small}
# pd_ee_delta_pos: joint-delta demonstrations fail closed loop even when fitted (benchmarks/RESULTS.md)
ENV_ARGS=(env=maniskill_pickcube_rgb env.kwargs.camera_size=96 env.max_episode_steps=${EPISODE_STEPS:-150}
  env.kwargs.control_mode=${CONTROL_MODE:-pd_ee_delta_pos})
# BINARIZE_GRIPPER=true: every stage's env opens or closes the gripper fully by the sign of the policy's gripper
# action (env.kwargs.binarize_gripper; the planner's demonstrations use +-1 already). Stop 54: stop 54's RL
# checkpoint dropped the cube in 14% of 64 held-out episodes and succeeded in 72%; the same checkpoint and seeds
# with the gripper binarized dropped it in 9% and succeeded in 78% (benchmarks/failure_stages.py).
[ -z "${BINARIZE_GRIPPER:-}" ] || ENV_ARGS+=("env.kwargs.binarize_gripper=$BINARIZE_GRIPPER")
# State dims hidden from the model (saved in the checkpoint's config). PickCube rgb's state: joint positions 0-8,
# joint velocities 9-17, is_grasped 18, gripper pose 19-25, goal 26-28. Velocities were hidden first (the copycat
# fix); stop 15 showed the arm's pose is a shortcut too: a state-only imitator without the cube fits the
# demonstrations almost as well and succeeds 4%, like pi0-small on rgb. Only is_grasped and the goal (which no
# camera shows) stay, so the policy has to find the cube in its camera. IGNORE_STATE_DIMS=[9,...,17]: the old set.
ARM_STATE="[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,19,20,21,22,23,24,25]"
POLICY_ARGS=(policy=$POLICY policy.size=$SIZE policy.require_checkpoint=false policy.precision=bf16
  "policy.overrides.ignore_state_dims=${IGNORE_STATE_DIMS:-$ARM_STATE}")
# pi0: PATCH=8 gives finer vision patches than pi0-small's 12 (144 instead of 64 image tokens at 96 px; PATCH=
# keeps 12). POLICY=openvla_oft SIZE=openvla-oft-small runs the same recipe for OpenVLA-OFT (8 px patches already).
[ "$POLICY" != pi0 ] || [ -z "${PATCH-8}" ] || POLICY_ARGS+=("policy.overrides.vision_patch_size=${PATCH-8}")
# pi0: the prompt's padding columns are dropped (trim_prompt_padding; PickCube's instruction is 45 of 96 byte
# tokens: 17% of an SFT step's FLOPs); TRIM=false keeps them. Saved in the checkpoint, so RL and eval trim too.
[ "$POLICY" != pi0 ] || POLICY_ARGS+=("policy.overrides.trim_prompt_padding=${TRIM:-true}")
# STEM=conv: pi0's convolutional vision stem (policies/common/conv_stem.py) instead of the patchify conv
[ -z "${STEM:-}" ] || POLICY_ARGS+=("policy.overrides.vision_stem=$STEM")
# The RL recipe per policy, before the caller's arguments (Hydra applies overrides in order: the caller's win).
# pi0 (stops 42-43, pi0-small on PickCube rgb, 27.5% -> 69.0%): PPO-clip with GRPO group advantages on the sparse
# success reward, Flow-SDE at noise level 0.5 (the pipeline's noise check or a later noise_level replaces it), fixed
# lr 3e-5 (5e-5 peaked, then drifted), 2 epochs, vision and language frozen. OpenVLA-OFT: the same GRPO on its
# Gaussian head (a learned std) with the vision towers frozen. RL_RECIPE=none: the caller's arguments alone.
# FREEZE_VISION=false: RL trains the vision encoder too. Ours is trained from scratch by SFT on ~1,200
# demonstrations, so frozen, it fixes what the action expert can see; the CPU analog (flow_mlp, whose frozen encoder
# keeps the full state) learned as well frozen as not (RESULTS.md stop 44), which says nothing about pixels.
RL_RECIPE_ARGS=(algorithm=grpo env.kwargs.reward_mode=sparse algorithm.lr=3e-5 algorithm.update_epochs=2
  runner.eval_interval=4 policy.overrides.freeze_vision_encoder=${FREEZE_VISION:-true})
[ "$POLICY" != pi0 ] || RL_RECIPE_ARGS+=(policy.overrides.noise_level=0.5 policy.overrides.freeze_language_model=true)
# RL_RECIPE=ppo (stop 46: GRPO at lr 3e-5 from 69.0% lost ground with the vision encoder training too: 61.0% best,
# 54.5% last): PPO with GAE and a critic at RLinf's pi0 ManiSkill settings (examples/embodiment/config/
# maniskill_ppo_openpi.yaml: policy lr 7.91e-6, value lr 1.55e-4, learned Flow-Noise std in [0.12, 0.16], gamma 0.99
# per chunk = 0.999 per env step here, GAE lambda 0.95), one epoch per rollout (every sample used once, as in
# their high-start LIBERO recipe), after 3 critic-only iterations (the value head starts untrained).
# Stop 47 ran that from 69.0% (90 iterations, 1.77M env steps): 69.0% last, 65.5% best on 200 held-out, KL 2e-4
# per update, and the critic never fit (value loss 250-430 throughout): with env.ignore_terminations=true the sparse
# reward pays every step after success, returns of 25-40. RLinf's config ends episodes at success (returns <= 1),
# takes 4 epochs per rollout and clips the value at +-0.2: now so here too. PPO_LR: the policy's lr (RLinf's 8e-6).
# Stop 48 ran that at PPO_LR=2e-5 (43 iterations, 837k env steps): the critic fit (explained variance 0.6), KL 0.01
# per update, and the deterministic success stayed at 63-76% (67.0% last, 69.5% best on 200 held-out). Stop 49 ran
# it with the whole from-scratch VLM training (vision, language model, action expert): 69.0% -> 74.5% last, 73.5%
# best, the first gain from this start, so PPO now trains everything unless FREEZE_VISION / FREEZE_LM say true.
if [ "${RL_RECIPE:-}" = ppo ]; then
  RL_RECIPE_ARGS=(algorithm=ppo env.kwargs.reward_mode=sparse env.ignore_terminations=false algorithm.lr=${PPO_LR:-8e-6}
    algorithm.value_lr=1.5e-4 algorithm.update_epochs=${PPO_EPOCHS:-4} algorithm.value_clip=0.2 algorithm.gamma=0.999
    algorithm.gae_lambda=0.95 algorithm.critic_warmup_iterations=3
    runner.eval_interval=4 policy.overrides.freeze_vision_encoder=${FREEZE_VISION:-false})
  [ "$POLICY" != pi0 ] || RL_RECIPE_ARGS+=(policy.overrides.noise_method=flow_noise policy.overrides.noise_std_min=0.12
    policy.overrides.noise_std_max=0.16 policy.overrides.freeze_language_model=${FREEZE_LM:-false})
fi
[ "${RL_RECIPE:-}" != none ] || RL_RECIPE_ARGS=()
stage=$1; shift
case $stage in
  collect)
    # demonstrations from seeds 100000+ (COLLECT_SEED): never the evaluations' (SFT's from sft.seed + 1000, the
    # final ones from 1000), however many are collected (stop 29: 1,600 from seed 0 reached 1000, and SFT
    # refused the dataset after 9 minutes of collection)
    "${PYTHON:-python3}" -m rlinf_embodied.collect "${ENV_ARGS[@]}" collect.output_dir=$WORK/data collect.num_episodes=${1:-200} \
      collect.seed=${COLLECT_SEED:-100000} \
      collect.num_workers=${WORKERS:-14} collect.max_episode_steps=${EPISODE_STEPS:-150} collect.progress=false \
      hydra.run.dir=$WORK/collect_run ;;
  sft)
    # SFT_INIT from an RL checkpoint: its config keeps RL's freeze switches; train the whole model again
    # (stop 28's continuation trained the action expert alone, 6.0M of 22.2M parameters, through them)
    [ -z "${SFT_INIT:-}" ] || [ "$POLICY" != pi0 ] || POLICY_ARGS+=(policy.overrides.freeze_vision_encoder=false
      policy.overrides.freeze_language_model=false)
    # evaluations in a process of their own while training goes on, whenever there are any (EVAL_ASYNC=false: waited)
    [ "${EVAL_INTERVAL:-0}" = 0 ] && eval_async=false || eval_async=${EVAL_ASYNC:-true}
    # (episodes per evaluation only where there are evaluations: without, sft refuses the setting as unread)
    [ "${EVAL_INTERVAL:-0}" = 0 ] && eval_episodes= || eval_episodes=sft.eval_episodes=${EVAL_EPISODES:-32}
    # likewise the env settings only the evaluations' envs read (camera size, time limit, ...): without evaluations
    # SFT reads the env group, its control mode and binarize_gripper (recorded with the checkpoint), and refuses the rest
    SFT_ENV_ARGS=("${ENV_ARGS[@]}")
    if [ "${EVAL_INTERVAL:-0}" = 0 ]; then
      SFT_ENV_ARGS=()
      for arg in "${ENV_ARGS[@]}"; do
        case $arg in env=*|env.id=*|env.kwargs.control_mode=*|env.kwargs.binarize_gripper=*) SFT_ENV_ARGS+=("$arg") ;; esac
      done
    fi
    "${PYTHON:-python3}" -m rlinf_embodied.sft "${SFT_ENV_ARGS[@]}" "${POLICY_ARGS[@]}" cluster.simulate_gpus=false \
      ${SFT_INIT:+policy.checkpoint=$SFT_INIT} ${EMA:+sft.ema_decay=$EMA} sft.dataset=$WORK/data sft.max_steps=${1:-3000} sft.batch_size=${BATCH:-64} sft.lr=${LR:-3e-4} \
      sft.lr_schedule=${LR_SCHEDULE:-cosine} ${STOP_AT:+sft.stop_at_success=$STOP_AT} sft.val_episodes=${VAL_EPISODES:-0} \
      sft.weight_decay=${WEIGHT_DECAY:-0} ${COMPILE:+sft.compile=true} \
      sft.image_shift=${IMAGE_SHIFT:-4} sft.warmup_steps=${WARMUP:-200} sft.eval_interval=${EVAL_INTERVAL:-0} sft.eval_async=$eval_async sft.save_interval=${SAVE_INTERVAL:-0} $eval_episodes \
      sft.log_interval=50 sft.progress=false sft.seed=${SFT_SEED:-0} sft.output_dir=${SFT_DIR:-$WORK/sft} \
      hydra.run.dir=${SFT_DIR:-$WORK/sft} ;;
  eval)
    "${PYTHON:-python3}" -m rlinf_embodied.eval "${ENV_ARGS[@]}" policy=$POLICY policy.checkpoint=${CKPT:-$WORK/sft/checkpoints/final/policy} \
      eval.num_episodes=${1:-200} eval.num_envs=${EVAL_ENVS:-16} eval.seed=${EVAL_SEED:-1000} eval.video=false eval.output_dir=$WORK/eval_${TAG:-sft} \
      hydra.run.dir=$WORK/eval_${TAG:-sft} "${@:2}" ;;
  rl)
    iterations=${1:-20}; shift || true
    "${PYTHON:-python3}" -m rlinf_embodied.train "${ENV_ARGS[@]}" env.ignore_terminations=${IGNORE_TERM:-false} policy=$POLICY \
      policy.checkpoint=${CKPT:-$WORK/sft/checkpoints/final/policy} policy.precision=bf16 cluster.simulate_gpus=false \
      runner.max_iterations=$iterations env.num_envs=${NUM_ENVS:-32} runner.rollout_steps=${ROLLOUT_STEPS:-25} \
      algorithm.num_minibatches=${MINIBATCHES:-4} runner.save_interval=5 runner.progress=false \
      ${RESUME:+runner.resume=$RESUME} runner.output_dir=$WORK/rl hydra.run.dir=$WORK/rl "${RL_RECIPE_ARGS[@]}" "$@" ;;
  bench)
    "${PYTHON:-python3}" benchmarks/sft_throughput.py --size $SIZE --batch-sizes 64 ${BATCH:-256} | tee $WORK/sft_throughput.txt ;;
  bench_compile)
    # eager vs sft.compile steps at the recipe's batch and patches, with each run's top device ops
    patch=(); [ "$POLICY" != pi0 ] || patch=(--override "trim_prompt_padding=${TRIM:-true}")
    [ "$POLICY" != pi0 ] || [ -z "${PATCH-8}" ] || patch+=(--override "vision_patch_size=${PATCH-8}")
    "${PYTHON:-python3}" benchmarks/sft_throughput.py --policy $POLICY --size $SIZE --batch-sizes ${BATCH:-512} --steps 20 \
      --compile --profile ${PROFILE_OPS:-15} "${patch[@]}" | tee $WORK/sft_compile.txt ;;
  steps_for)
    # SFT steps that fit in $1 seconds at the bench stage's measured s/step (batch $BATCH, dataset on the device)
    "${PYTHON:-python3}" - "$WORK/sft_throughput.txt" "${BATCH:-256}" "$1" <<'PY'
import sys
rows = [line.split("|") for line in open(sys.argv[1]) if line.startswith("|")]
seconds = [float(r[3]) for r in rows if len(r) > 5 and r[1].strip() == sys.argv[2] and r[2].strip() == "cuda"]
print(max(1000, int(float(sys.argv[3]) / seconds[-1]) // 500 * 500))
PY
    ;;
  pick)
    # the few-shot regime of the pi-RL paper: the SFT checkpoint with the highest eval success in
    # [0.2, 0.7] (else the best one), from the sft stage's periodic evaluations (EVAL_INTERVAL > 0), over
    # every SFT run ($WORK/sft, or $WORK/sft_<seed> with SFT_SEEDS)
    "${PYTHON:-python3}" - "$WORK" <<'PY'
import glob, json, os, sys
evals = []
for metrics in sorted(glob.glob(f"{sys.argv[1]}/sft*/metrics.jsonl")):
    rows = [json.loads(line) for line in open(metrics)]
    run = os.path.dirname(metrics)
    evals += [(row["eval/success_once"], row["step"], run) for row in rows if "eval/success_once" in row]
in_range = [e for e in evals if 0.2 <= e[0] <= 0.7]
success, step, run = max(in_range or evals)
path = f"{run}/checkpoints/step_{step:06d}/policy"
if not os.path.isdir(path):  # the last step is saved as checkpoints/final
    path = f"{run}/checkpoints/final/policy"
print(f"{path} {success:.3f}")
PY
    ;;
  reached)
    # exit 0 when some SFT run ($WORK/sft*) has evaluated at success >= $1
    "${PYTHON:-python3}" - "$WORK" "$1" <<'PY'
import glob, json, sys
rows = [json.loads(line) for path in glob.glob(f"{sys.argv[1]}/sft*/metrics.jsonl") for line in open(path)]
sys.exit(0 if any(row.get("eval/success_once", -1) >= float(sys.argv[2]) for row in rows) else 1)
PY
    ;;
  pipeline)
    any_alive() { for pid in "$@"; do kill -0 "$pid" 2>/dev/null && return 0; done; return 1; }
    set -x
    [ -n "${SKIP_COLLECT:-}" ] || bash "$0" collect "${1:-400}"
    shift || true  # the remaining arguments go to the rl stage (Hydra overrides)
    # on the device, the ray bundle comes in the next call (device_setup.sh unpacks into /tmp/site)
    [ ! -d /tmp/site ] || while [ ! -f /tmp/site/.unpacked_ray.txz ]; do sleep 2; done
    # a checkpoint carried in pieces over several calls (device_checkpoint.sh) is complete once its directory exists
    [ -z "${SFT_INIT:-}" ] || while [ ! -f "$SFT_INIT/model.safetensors" ]; do sleep 2; done
    # BENCH_CHUNK_OBS=1: the rgb render saving of chunked steps (benchmarks/chunk_observation.py), beside SFT
    [ -z "${BENCH_CHUNK_OBS:-}" ] || ("${PYTHON:-python3}" benchmarks/chunk_observation.py --obs-mode rgb --num-envs 16 32 \
      --rounds 3 > "$WORK/chunk_observation.txt" 2>&1 &)
    [ -n "${SFT_STEPS:-}" ] || BATCH=${BATCH:-256} bash "$0" bench || echo "bench failed: SFT gets 6000 steps"
    # as many steps as SFT_SECONDS allow (stop 14: 3,000 steps x 64 left pi0-small under-trained), 4 evals
    steps=${SFT_STEPS:-$(BATCH=${BATCH:-256} bash "$0" steps_for "${SFT_SECONDS:-480}" || echo 6000)}
    interval=$(( (steps / ${SFT_EVALS:-4} + 99) / 100 * 100 ))
    # SFT_SEEDS="0 1 2": that many SFT runs at once on the GPU, one per seed (stops 23-27: four runs of one
    # recipe scored 2.5-46.5%, so the seed decides as much as the recipe); pick reads them all
    sft_pids=()
    # COMPILE_SEEDS="0": those runs with sft.compile (the others eager), so their time/step compare side by side
    for seed in ${SFT_SEEDS:-0}; do
      dir=$WORK/sft; [ -z "${SFT_SEEDS:-}" ] || dir=$WORK/sft_$seed
      compile=${COMPILE:-}; [[ " ${COMPILE_SEEDS:-} " != *" $seed "* ]] || compile=1
      COMPILE=$compile SFT_SEED=$seed SFT_DIR=$dir BATCH=${BATCH:-256} SAVE_INTERVAL=$interval EVAL_INTERVAL=$interval \
        EVAL_EPISODES=64 bash "$0" sft "$steps" > "$dir.log" 2>&1 & sft_pids+=($!)
    done
    # with STOP_AT, the first run to reach it (and stop itself) stops the others too: SIGTERM makes each save a
    # checkpoint and end, and pick reads every run's evaluations (the device time goes to RL instead)
    while [ -n "${STOP_AT:-}" ] && [ ${#sft_pids[@]} -gt 1 ] && any_alive "${sft_pids[@]}"; do
      sleep 10
      if bash "$0" reached "$STOP_AT"; then
        echo "an SFT run reached $STOP_AT: stopping the others"; pkill -TERM -f "rlinf_embodied[.]sft .*output_dir=$WORK/sft" || true
        break
      fi
    done
    wait  # any failed run shows in its log; pick reads the runs that evaluated
    read -r CKPT SFT_SUCCESS < <(bash "$0" pick)
    echo "picked $CKPT (eval success $SFT_SUCCESS)"; echo "$CKPT" > "$WORK/picked.txt"
    # FAILURE_STAGES=1: where the SFT policy's episodes stop (grasped / placed / success), beside its evaluation
    [ -z "${FAILURE_STAGES:-}" ] || ("${PYTHON:-python3}" benchmarks/failure_stages.py "$CKPT" --policy "$POLICY" --obs-mode rgb \
      --camera-size 96 --max-steps "${EPISODE_STEPS:-150}" --episodes 32 > "$WORK/failure_stages.txt" 2>&1 &)
    # the SFT policy's 200 held-out episodes, beside the stochastic rollouts that pick RL's noise level
    CKPT=$CKPT TAG=sft bash "$0" eval "${FINAL_EPISODES:-200}" & sft_eval=$!
    noise_args=()
    if [ -n "${NOISE_LEVELS-0.5 0.25 0.1}" ] && [ "$POLICY" != openvla_oft ]; then
      CKPT=$CKPT bash "$0" noise_evals ${NOISE_LEVELS-0.5 0.25 0.1}  # beside the SFT evaluation, which noise reads
      level=$(bash "$0" noise ${NOISE_LEVELS-0.5 0.25 0.1}); echo "noise level $level"
      noise_args=("policy.overrides.noise_level=$level")
    fi
    # SFT_EVAL_BESIDE_RL=1: RL starts while the SFT policy's 200 episodes still run (one device session holds
    # collection, SFT and RL; the evaluation's minutes go to RL instead)
    [ -n "${SFT_EVAL_BESIDE_RL:-}" ] || wait $sft_eval
    # SKIP_RL=1: a session spent on SFT alone; its checkpoint goes home (device_checkpoint.sh) for the next one
    # the picked level last: Hydra applies overrides in order, so a noise_level in "$@" would otherwise win
    [ -n "${SKIP_RL:-}" ] || CKPT=$CKPT bash "$0" rl_eval "$@" "${noise_args[@]}"
    [ -z "${SFT_EVAL_BESIDE_RL:-}" ] || wait $sft_eval
    echo "pipeline done" ;;
  noise_evals)
    # $CKPT's stochastic success at each noise level ($@), NOISE_EPISODES episodes each, all at once; `noise` reads them
    noise_evals=()
    for level in "$@"; do
      CKPT=$CKPT TAG=noise_$level EVAL_ENVS=16 bash "$0" eval "${NOISE_EPISODES:-48}" eval.deterministic=false \
        policy.overrides.noise_level=$level & noise_evals+=($!); done
    wait "${noise_evals[@]}" ;;
  noise)
    # Stop 22's lesson (RESULTS.md): GRPO from SFT improves the noisy policy and can wreck its mean when the
    # noisy rollouts succeed far less often than the mean. The largest level whose stochastic success is at
    # least NOISE_RATIO of the deterministic one (the noise_<level> evals above), else the smallest level.
    "${PYTHON:-python3}" - "$WORK" "${NOISE_RATIO:-0.8}" "$@" <<'PY'
import json, sys
work, ratio, levels = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
def success(tag):
    tasks = json.load(open(f"{work}/eval_{tag}/results.json"))["tasks"]
    return sum(t["successes"] for t in tasks) / max(sum(t["episodes"] for t in tasks), 1)
deterministic = success("sft")
stochastic = {level: success(f"noise_{level}") for level in levels}
print(f"deterministic {deterministic:.3f}, stochastic {stochastic}", file=sys.stderr)
fine = [level for level in levels if stochastic[level] >= ratio * deterministic]
print(max(fine, key=float) if fine else min(levels, key=float))
PY
    ;;
  rl_eval)
    # RL from $CKPT for RL_SECONDS, then its last checkpoint on FINAL_EPISODES held-out episodes. SIGINT after
    # RL_SECONDS (or the number in $WORK/rl_seconds, written while it runs, when the device time left is known)
    # or at the epoch second RL_DEADLINE, whichever comes first:
    # the runner finishes its iteration, saves and exits 130. A checkpoint carried in pieces is waited for.
    [ ! -d /tmp/site ] || while [ ! -f /tmp/site/.unpacked_ray.txz ]; do sleep 2; done
    while [ ! -f "$CKPT/model.safetensors" ]; do sleep 2; done
    # a watchdog sends the SIGINT to the training driver (matched by its output dir, not the ratio check's);
    # it re-reads the limit every 5 s, so a later device call can lengthen or shorten the run
    rl_start=$(date +%s); echo "$rl_start" > "$WORK/rl_start"
    (while sleep 5; do
      limit=${RL_SECONDS:-600}; [ ! -f "$WORK/rl_seconds" ] || limit=$(cat "$WORK/rl_seconds")
      now=$(date +%s)
      if [ $(( now - rl_start )) -ge "$limit" ] || [ "$now" -ge "${RL_DEADLINE:-$((now + 1))}" ]; then
        pkill -INT -f "rlinf_embodied.train.*output_dir=$WORK/rl "; break
      fi
    done) & watchdog=$!
    bash "$0" rl 1000 "$@" || true
    kill $watchdog 2>/dev/null || true
    last=$(ls -d "$WORK"/rl/checkpoints/iteration_* | tail -1)
    CKPT=$last/policy TAG=rl bash "$0" eval "${FINAL_EPISODES:-200}" &
    echo "$last/policy" > "$WORK/rl_last.txt"
    # the best periodic evaluation's checkpoint too (runner.eval_interval): GRPO from BC peaked, then drifted
    # down on the CPU analog (RESULTS.md stop 21), so the last checkpoint alone can hide the gain
    best=$WORK/rl/checkpoints/best/policy
    [ ! -d "$best" ] || CKPT=$best TAG=rl_best bash "$0" eval "${FINAL_EPISODES:-200}" &
    wait
    echo "rl_eval done" ;;
  *) echo "unknown stage $stage: collect | sft | eval | noise_evals | noise | rl | rl_eval | pick | reached | pipeline"; exit 2 ;;
esac
if [ -n "${OUT:-}" ]; then
  for f in $WORK/sft*/metrics.jsonl $WORK/rl/metrics.jsonl $WORK/eval_*/results.json; do
    [ -f "$f" ] && cp "$f" "$OUT/$(echo ${f#$WORK/} | tr / _)" || true
  done
fi
