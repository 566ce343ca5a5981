# What every codetune batch script shares, sourced by launch/*.sbatch (not run on its own):
#
#   job_setup SCRIPT "$@"   check the arguments, set the environment, arm the USR1 trap
#   job_run COMMAND...      run COMMAND in the background, wait, requeue the job if the run stopped on request
#
# The launcher is `python -m trainer.cli train` (`codetune train`), which exits with the recipe's own
# status: 75 after a stop request (checkpoint saved), 2 for bad input, 1 for other failures, 0 when
# done. (`accelerate launch` would turn every failure, 75 included, into 1.) srun exits with the
# highest status of its tasks. The job requeues on 75, and also when it asked for the stop itself and
# the status is not 0, in case something between the recipe and this shell changed the 75.
#
# Preemption: 120 s before the time limit SLURM sends USR1 to the batch shell only (B:); the trap
# creates $CODETUNE_STOP_FILE, every rank stops at its next step, a checkpoint is saved, and the job
# requeues itself: the rerun appends to the same log and resumes from that checkpoint.

job_setup() {
    local script=$1
    shift
    OUTPUT_DIR=""
    for arg in "$@"; do
        case $arg in output_dir=*) OUTPUT_DIR=${arg#output_dir=} ;; esac
    done
    if [ $# -lt 1 ] || [ -z "$OUTPUT_DIR" ]; then
        echo "usage: sbatch launch/$script RECIPE [--config FILE] output_dir=DIR [key=value ...]" >&2
        echo "output_dir= is required: a requeued job resumes from the checkpoints there" >&2
        exit 2
    fi
    export NPROC_PER_NODE=${NPROC_PER_NODE:-${SLURM_GPUS_ON_NODE:?no GPUs allocated: set NPROC_PER_NODE}}
    export MAIN_PORT=${MAIN_PORT:-$((20000 + SLURM_JOB_ID % 20000))}  # per job: jobs may share a node
    export ACCELERATE_CONFIG=${ACCELERATE_CONFIG:-accelerate_config.yaml}
    export CODETUNE_ACCELERATE_ARGS=${CODETUNE_ACCELERATE_ARGS:-}
    export CODETUNE_STOP_FILE=$OUTPUT_DIR/.stop-$SLURM_JOB_ID
    export SRUN_CPUS_PER_TASK=${SLURM_CPUS_PER_TASK:-1}  # since Slurm 22.05 srun does not inherit it
    export PYTHONUNBUFFERED=1
    rm -f "$CODETUNE_STOP_FILE"  # a stale one would stop the run at once
    stop_requested=0
    trap on_usr1 USR1
}

# shellcheck disable=SC2317  # called by the trap
on_usr1() {
    stop_requested=1
    echo "codetune: USR1 (time limit near): asking the run to checkpoint and stop"
    mkdir -p "$OUTPUT_DIR" && touch "$CODETUNE_STOP_FILE"
}

job_run() {
    "$@" &  # in the background, so that the trap runs as soon as USR1 arrives
    local step=$! status=0
    while :; do
        wait "$step" && status=0 || status=$?
        kill -0 "$step" 2>/dev/null || break  # still running: the wait was cut short by the trap
    done
    rm -f "$CODETUNE_STOP_FILE"
    if [ "$status" -eq 75 ] || { [ "$stop_requested" -eq 1 ] && [ "$status" -ne 0 ]; }; then
        echo "codetune: run checkpointed and stopped (status $status); requeueing job $SLURM_JOB_ID"
        scontrol requeue "$SLURM_JOB_ID"
        exit 0
    fi
    exit "$status"
}
