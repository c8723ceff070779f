#!/usr/bin/env bash
# Prepare an AWS GPU node (g6.12xlarge: 4x NVIDIA L4) for ocrfleet. Idempotent: re-run it at
# will, every step checks what is already there first.
#
#   sudo deploy/aws/setup_multi_gpu_env.sh --dry-run        # print every step, change nothing
#   sudo deploy/aws/setup_multi_gpu_env.sh --hf-token-ssm /ocrfleet/hf-token
#
# Steps: apt packages; uv (the one Python environment manager), Python 3.12 and a venv with a
# pinned vLLM and ocrfleet; an env file (/etc/ocrfleet/env, mode 0600); the DeepSeek-OCR
# weights; the local NVMe instance store at /local for --image-cache. See deploy/aws/runbook.md.
#
# The Hugging Face token (optional: the model is public; a token raises rate limits) comes
# from HF_TOKEN, else SSM Parameter Store, else Secrets Manager. It is never written to a file
# or a log, never printed, never put on a command line (only into the environment of the
# download command), and tracing (set -x) is never on.
set +x
set -Eeuo pipefail
umask 022
# Line and status only: the failed command's text could carry a value.
trap 'echo "error: line $LINENO failed (exit $?)" >&2' ERR

VLLM_VERSION="0.26.0"
PYTHON_VERSION="3.12"
UV_VERSION="0.13.9"
MODEL_ID="deepseek-ai/DeepSeek-OCR"
# fonts-dejavu: Greek glyphs for the sample PDFs of `ocrfleet preflight` and the tests.
APT_PACKAGES=(build-essential git tmux htop nvtop jq unzip python3-venv fonts-dejavu nvme-cli
  xfsprogs mdadm)
INSTANCE_STORE_MODEL="Amazon EC2 NVMe Instance Storage"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SOURCE_DIR="$(cd "$here/../.." && pwd)"
MODEL_DIR="/opt/models/DeepSeek-OCR"
VENV_DIR="/opt/ocrfleet/venv"
TOOLS_DIR="/opt/ocrfleet/tools"
PYTHON_DIR="/opt/ocrfleet/python"
ENV_FILE="/etc/ocrfleet/env"
MOUNT_POINT="/local"
CACHE_DIR="/local/ocrfleet-cache"
RUN_USER="${SUDO_USER:-$(id -un)}"
HF_TOKEN_SSM=""
HF_TOKEN_SECRET=""
DRY_RUN=0
SKIP_MODEL=0
SKIP_NVME=0

# Taken out of the environment at once, so that no step but the download inherits it.
env_token="${HF_TOKEN:-${HUGGING_FACE_HUB_TOKEN:-}}"
unset HF_TOKEN HUGGING_FACE_HUB_TOKEN

usage() {
  cat <<EOF
usage: $(basename "$0") [options]

Prepare this node for ocrfleet (run with sudo; --dry-run needs no root).

  --dry-run               print every step (the exact commands) and change nothing
  --source DIR            ocrfleet checkout to install (default: $SOURCE_DIR)
  --model-dir DIR         where the model goes (default: $MODEL_DIR)
  --venv DIR              the Python environment (default: $VENV_DIR)
  --user NAME             the account that runs ocrfleet; owns the env file and the cache
                          (default: $RUN_USER)
  --hf-token-ssm NAME     read the HF token from this SSM parameter (SecureString)
  --hf-token-secret ID    read the HF token from this Secrets Manager secret
  --skip-model            do not download the model
  --skip-nvme             do not touch the NVMe instance store
  -h, --help              this help

Pinned: vLLM $VLLM_VERSION, Python $PYTHON_VERSION, uv $UV_VERSION.
The HF token is taken from HF_TOKEN, else --hf-token-ssm, else --hf-token-secret
(sudo drops HF_TOKEN unless you run: sudo --preserve-env=HF_TOKEN ...).
EOF
}

die() {
  echo "error: $*" >&2
  exit 1
}

while (($#)); do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --source) SOURCE_DIR="${2:?--source needs a directory}"; shift ;;
    --model-dir) MODEL_DIR="${2:?--model-dir needs a directory}"; shift ;;
    --venv) VENV_DIR="${2:?--venv needs a directory}"; shift ;;
    --user) RUN_USER="${2:?--user needs a name}"; shift ;;
    --hf-token-ssm) HF_TOKEN_SSM="${2:?--hf-token-ssm needs a parameter name}"; shift ;;
    --hf-token-secret) HF_TOKEN_SECRET="${2:?--hf-token-secret needs a secret id}"; shift ;;
    --skip-model) SKIP_MODEL=1 ;;
    --skip-nvme) SKIP_NVME=1 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; echo "error: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

# ---- output helpers: every change goes through run() or write_file(), which --dry-run prints.

step() { printf '\n==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }

# A word as the shell needs it: as is when plain, else single-quoted.
quote() {
  local word="$1"
  if [[ "$word" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
    printf '%s' "$word"
  else
    printf "'%s'" "${word//\'/\'\\\'\'}"
  fi
}

show() {
  local line="+" word
  for word in "$@"; do
    line+=" $(quote "$word")"
  done
  printf '%s\n' "$line"
}

run() {
  show "$@"
  if ((!DRY_RUN)); then
    "$@"
  fi
}

# write_file PATH MODE OWNER: content from stdin, written atomically with that mode.
write_file() {
  local path="$1" mode="$2" owner="$3" content tmp line
  content="$(cat)"
  printf '+ write %s (mode %s, owner %s):\n' "$path" "$mode" "$owner"
  while IFS= read -r line; do printf '      %s\n' "$line"; done <<<"$content"
  ((DRY_RUN)) && return 0
  tmp="$(umask 077 && mktemp "$(dirname "$path")/.$(basename "$path").XXXXXX")"
  printf '%s\n' "$content" >"$tmp"
  chmod "$mode" "$tmp"
  chown "$owner" "$tmp"
  mv -f "$tmp" "$path"
}

summary=()
done_step() { summary+=("$*"); }

if ((!DRY_RUN)) && ((EUID != 0)); then
  die "run as root (sudo $0 ...), or with --dry-run to see the steps"
fi
if ((DRY_RUN)); then
  echo "dry run: nothing is changed; commands that would run are prefixed with +"
fi
[[ -f "$SOURCE_DIR/pyproject.toml" ]] || die "--source $SOURCE_DIR is not an ocrfleet checkout"
SOURCE_DIR="$(cd "$SOURCE_DIR" && pwd)"
id "$RUN_USER" >/dev/null 2>&1 || die "--user $RUN_USER: no such account"
RUN_GROUP="$(id -gn "$RUN_USER")"

# ---- 1. apt packages -------------------------------------------------------------------------
step "1/6 system packages"
if ! command -v apt-get >/dev/null 2>&1; then
  ((DRY_RUN)) || die "no apt-get: install ${APT_PACKAGES[*]} with this system's tools"
  note "no apt-get here: on the node these packages come from apt: ${APT_PACKAGES[*]}"
else
  wanted=("${APT_PACKAGES[@]}")
  if command -v aws >/dev/null 2>&1; then
    note "AWS CLI present: $(aws --version 2>&1 | head -n1)"
  else
    wanted+=(awscli)
  fi
  installed="$(dpkg-query -W -f='${Package} ${Status}\n' "${wanted[@]}" 2>/dev/null || true)"
  missing=()
  for pkg in "${wanted[@]}"; do
    if ! grep -qx "$pkg install ok installed" <<<"$installed"; then
      missing+=("$pkg")
    fi
  done
  if ((${#missing[@]})); then
    run apt-get update -q
    # A package this release does not have (nvtop on plain Debian, awscli on Ubuntu 24.04)
    # must not sink the others.
    candidates="$(apt-cache policy "${missing[@]}" 2>/dev/null |
      awk '/^[^ ].*:$/ { pkg = substr($0, 1, length($0) - 1) } /Candidate: [0-9]/ { print pkg }')"
    available=()
    for pkg in "${missing[@]}"; do
      if grep -qx "$pkg" <<<"$candidates"; then
        available+=("$pkg")
      elif [[ "$pkg" == awscli ]]; then
        note "no AWS CLI and no apt awscli package on this release: --hf-token-ssm,"
        note "--hf-token-secret and the runbook's snapshot step need AWS CLI v2 (preinstalled"
        note "on the AWS Deep Learning AMIs; else: snap install aws-cli --classic)"
      else
        note "no apt package $pkg on this release: skipped"
      fi
    done
    if ((${#available[@]})); then
      run env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${available[@]}"
    fi
    done_step "apt: installed ${available[*]:-nothing}"
  else
    note "all present: ${wanted[*]}"
    done_step "apt: all packages present"
  fi
fi

# ---- 2. uv, Python, the venv with vLLM and ocrfleet ------------------------------------------
step "2/6 uv $UV_VERSION, Python $PYTHON_VERSION, venv $VENV_DIR (vLLM $VLLM_VERSION + ocrfleet)"
UV="$TOOLS_DIR/bin/uv"
# uv-managed Pythons live under /opt, not in root's home, so the run user can use the venv.
export UV_PYTHON_INSTALL_DIR="$PYTHON_DIR"
if [[ -x "$UV" ]] && [[ "$("$UV" --version 2>/dev/null)" == "uv $UV_VERSION"* ]]; then
  note "uv $UV_VERSION already in $TOOLS_DIR"
else
  # From PyPI into its own small venv: pinned and verifiable, no curl | sh.
  run python3 -m venv "$TOOLS_DIR"
  run "$TOOLS_DIR/bin/pip" install -q "uv==$UV_VERSION"
fi
run "$UV" python install "$PYTHON_VERSION"
if [[ -x "$VENV_DIR/bin/python" ]] &&
  [[ "$("$VENV_DIR/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" == "$PYTHON_VERSION" ]]; then
  note "venv $VENV_DIR exists (Python $PYTHON_VERSION)"
else
  run "$UV" venv --python "$PYTHON_VERSION" "$VENV_DIR"
fi
run "$UV" pip install --python "$VENV_DIR/bin/python" "vllm==$VLLM_VERSION" \
  "${SOURCE_DIR}[vllm,s3]" hf_transfer
verify='import importlib.metadata as m, sys; v = m.version("vllm"); '
verify+='print("vllm", v, "ocrfleet", m.version("ocrfleet")); sys.exit(v != sys.argv[1])'
run "$VENV_DIR/bin/python" -c "$verify" "$VLLM_VERSION"
done_step "venv: $VENV_DIR (Python $PYTHON_VERSION, vllm==$VLLM_VERSION, ocrfleet[vllm,s3])"

# ---- 3. environment file ---------------------------------------------------------------------
step "3/6 environment file $ENV_FILE (mode 0600)"
run install -d -m 0755 "$(dirname "$ENV_FILE")"
# No secret goes in here: the HF token is only ever passed to the download step.
write_file "$ENV_FILE" 0600 "$RUN_USER:$RUN_GROUP" <<EOF
# ocrfleet node settings, written by deploy/aws/setup_multi_gpu_env.sh. Load with:
#   set -a; . $ENV_FILE; set +a
HF_HUB_ENABLE_HF_TRANSFER=1
HF_XET_HIGH_PERFORMANCE=1
HF_HUB_DISABLE_TELEMETRY=1
VLLM_NO_USAGE_STATS=1
DO_NOT_TRACK=1
OCRFLEET_MODEL=$MODEL_DIR
EOF
if ((!DRY_RUN)); then
  perms="$(stat -c '%a %U' "$ENV_FILE")"
  [[ "$perms" == "600 $RUN_USER" ]] || die "$ENV_FILE has mode/owner '$perms', expected '600 $RUN_USER'"
  note "verified: $ENV_FILE is 0600, owned by $RUN_USER"
else
  note "then verify: stat -c '%a %U' $ENV_FILE prints '600 $RUN_USER'"
fi
done_step "env file: $ENV_FILE (0600, $RUN_USER)"

# ---- 4. model weights ------------------------------------------------------------------------
# The token lives only in this function's local variable and in the environment of the one
# command that needs it.
fetch_token() {
  local -n _out="$1"
  _out=""
  if [[ -n "$env_token" ]]; then
    note "HF token: from the environment (HF_TOKEN)"
    _out="$env_token"
  elif [[ -n "$HF_TOKEN_SSM" ]]; then
    note "HF token: from SSM Parameter Store $HF_TOKEN_SSM"
    show aws ssm get-parameter --name "$HF_TOKEN_SSM" --with-decryption \
      --query Parameter.Value --output text
    if ((DRY_RUN)); then
      _out="***"
    else
      command -v aws >/dev/null 2>&1 || die "--hf-token-ssm needs the AWS CLI"
      _out="$(aws ssm get-parameter --name "$HF_TOKEN_SSM" --with-decryption \
        --query Parameter.Value --output text)" || die "could not read SSM parameter $HF_TOKEN_SSM"
    fi
  elif [[ -n "$HF_TOKEN_SECRET" ]]; then
    note "HF token: from Secrets Manager $HF_TOKEN_SECRET (a plain string, or JSON with HF_TOKEN)"
    show aws secretsmanager get-secret-value --secret-id "$HF_TOKEN_SECRET" \
      --query SecretString --output text
    if ((DRY_RUN)); then
      _out="***"
    else
      command -v aws >/dev/null 2>&1 || die "--hf-token-secret needs the AWS CLI"
      _out="$(aws secretsmanager get-secret-value --secret-id "$HF_TOKEN_SECRET" \
        --query SecretString --output text)" || die "could not read secret $HF_TOKEN_SECRET"
      if [[ "$_out" == "{"* ]]; then
        # printf is a builtin: the value reaches jq through a pipe, not its command line.
        _out="$(printf '%s' "$_out" | jq -r '.HF_TOKEN // .hf_token // .token // empty')"
      fi
    fi
  else
    note "HF token: none (anonymous download of a public model)"
  fi
}

download_model() {
  local token hf_cli
  fetch_token token
  hf_cli="$VENV_DIR/bin/hf"
  if ((!DRY_RUN)) && [[ ! -x "$hf_cli" ]]; then
    hf_cli="$VENV_DIR/bin/huggingface-cli"
  fi
  run install -d -m 0755 "$MODEL_DIR"
  local cmd=(env HF_HUB_ENABLE_HF_TRANSFER=1 HF_XET_HIGH_PERFORMANCE=1 HF_HUB_DISABLE_TELEMETRY=1
    "$hf_cli" download "$MODEL_ID" --local-dir "$MODEL_DIR")
  if [[ -n "$token" ]]; then
    printf '+ HF_TOKEN=***'
    show "${cmd[@]}" | cut -c2-
    if ((!DRY_RUN)); then
      HF_TOKEN="$token" "${cmd[@]}"
    fi
  else
    run "${cmd[@]}"
  fi
  token=""
  unset token
  if ((!DRY_RUN)) && [[ ! -f "$MODEL_DIR/config.json" ]]; then
    die "the download finished without $MODEL_DIR/config.json"
  fi
  write_file "$MODEL_DIR/.ocrfleet-download-complete" 0644 root:root \
    <<<"$(date -u +%Y-%m-%dT%H:%M:%SZ) $MODEL_ID"
  run chmod -R a+rX "$MODEL_DIR"
}

step "4/6 model $MODEL_ID -> $MODEL_DIR"
if ((SKIP_MODEL)); then
  note "skipped (--skip-model)"
  done_step "model: skipped"
elif [[ -f "$MODEL_DIR/.ocrfleet-download-complete" && -f "$MODEL_DIR/config.json" ]]; then
  note "already downloaded ($(cat "$MODEL_DIR/.ocrfleet-download-complete"))"
  done_step "model: $MODEL_DIR (already there)"
else
  download_model
  done_step "model: $MODEL_DIR"
fi

# ---- 5. NVMe instance store at /local --------------------------------------------------------
instance_store_devices() {
  local line name model
  while IFS= read -r line; do
    [[ "$line" =~ NAME=\"([^\"]*)\"\ MODEL=\"([^\"]*)\" ]] || continue
    name="${BASH_REMATCH[1]}"
    model="${BASH_REMATCH[2]}"
    model="${model//\\x20/ }"
    model="${model%"${model##*[![:space:]]}"}"
    if [[ "$model" == "$INSTANCE_STORE_MODEL" ]]; then
      printf '%s\n' "$name"
    fi
  done < <(lsblk -dnpP -o NAME,MODEL 2>/dev/null || true)
  return 0
}

# Exit status of `blkid -p`: 0 a signature (filesystem, RAID member, partition table) found,
# 2 nothing found. Only 2 means "blank"; anything else (no permission, error) is not blank.
probe_device() {
  local dev="$1" rc=0 kind
  kind="$(blkid -p -o value -s TYPE "$dev" 2>/dev/null)" || rc=$?
  if ((rc == 2)); then
    echo "blank"
  elif ((rc == 0)); then
    echo "${kind:-signature}"
  else
    echo "unknown (blkid exit $rc)"
  fi
}

setup_nvme() {
  local devices=() target="" state dev
  if findmnt -rn -M "$MOUNT_POINT" >/dev/null 2>&1; then
    note "$MOUNT_POINT is already mounted ($(findmnt -rno SOURCE,FSTYPE -M "$MOUNT_POINT")): skipped"
  else
    mapfile -t devices < <(instance_store_devices)
    if ((${#devices[@]} == 0)); then
      note "no NVMe instance-store device (model '$INSTANCE_STORE_MODEL'): nothing to mount"
      done_step "nvme: no instance store on this instance type"
      return 0
    fi
    note "instance-store devices: ${devices[*]}"
    if ((${#devices[@]} == 1)); then
      target="${devices[0]}"
    elif [[ -e /dev/md/ocrfleet ]]; then
      target=/dev/md/ocrfleet
      note "RAID 0 array /dev/md/ocrfleet exists"
    else
      for dev in "${devices[@]}"; do
        state="$(probe_device "$dev")"
        if [[ "$state" != blank ]]; then
          note "$dev carries '$state': not building a RAID over it; mount it yourself"
          done_step "nvme: left alone ($dev carries '$state')"
          return 0
        fi
      done
      note "all ${#devices[@]} devices are blank: one RAID 0 array over them"
      run mdadm --create /dev/md/ocrfleet --level=0 --raid-devices="${#devices[@]}" --run \
        "${devices[@]}"
      target=/dev/md/ocrfleet
    fi
    state="$(probe_device "$target")"
    if ((DRY_RUN)) && [[ "$target" == /dev/md/ocrfleet && ! -e "$target" ]]; then
      state=blank
    fi
    case "$state" in
      blank)
        note "$target has no filesystem (blkid -p finds nothing): formatting it"
        run mkfs.xfs -L ocrfleet-local "$target"
        ;;
      xfs | ext4)
        note "$target already has a filesystem ($state): not formatting, mounting it"
        ;;
      *)
        note "$target carries '$state': not formatting, not mounting; check it by hand"
        done_step "nvme: left alone ($target carries '$state')"
        return 0
        ;;
    esac
    local uuid="<UUID of $target>"
    if ((!DRY_RUN)); then
      uuid="$(blkid -p -s UUID -o value "$target")"
    fi
    run install -d -m 0755 "$MOUNT_POINT"
    # Instance store is blank again after a stop/start: nofail keeps the boot going, and a
    # stale /local line (an old UUID) is replaced.
    local entry="UUID=$uuid $MOUNT_POINT xfs defaults,noatime,nofail,x-systemd.device-timeout=10s 0 2"
    if [[ "$state" == ext4 ]]; then
      entry="${entry/ xfs / ext4 }"
    fi
    if grep -qF "$entry" /etc/fstab 2>/dev/null; then
      note "/etc/fstab already has: $entry"
    else
      if grep -qE "[[:space:]]${MOUNT_POINT}[[:space:]]" /etc/fstab 2>/dev/null; then
        run sed -i.ocrfleet.bak "\\#[[:space:]]${MOUNT_POINT}[[:space:]]#d" /etc/fstab
      fi
      printf "+ echo '%s' >> /etc/fstab\n" "$entry"
      if ((!DRY_RUN)); then
        printf '%s\n' "$entry" >>/etc/fstab
      fi
    fi
    run mount "$MOUNT_POINT"
  fi
  run install -d -m 0755 -o "$RUN_USER" -g "$RUN_GROUP" "$CACHE_DIR"
  done_step "nvme: $MOUNT_POINT mounted, $CACHE_DIR for --image-cache"
}

step "5/6 NVMe instance store -> $MOUNT_POINT ($CACHE_DIR)"
if ((SKIP_NVME)); then
  note "skipped (--skip-nvme)"
  done_step "nvme: skipped"
else
  setup_nvme
fi

# ---- 6. summary ------------------------------------------------------------------------------
if ((DRY_RUN)); then
  step "6/6 summary (dry run: nothing was changed)"
else
  step "6/6 summary"
fi
for line in "${summary[@]}"; do
  note "$line"
done
cat <<EOF

next, as $RUN_USER:
  set -a; . $ENV_FILE; set +a
  source $VENV_DIR/bin/activate
  ocrfleet preflight --expect-gpus 4 --expect-model L4
EOF
