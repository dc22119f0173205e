#!/usr/bin/env bash
# Prepares short real video clips for training the tiny video model.
#
# Sources: OpenCV's sample videos as Debian's opencv-doc package ships them (vtest.avi, tree.avi,
# box.mp4, cup.mp4; Megamind*.avi are left out because they come from a commercial film). Each
# video is decoded with ffmpeg, resampled to a fixed frame rate, center-cropped to a square,
# downscaled with area averaging and stored as
#   OUT/<name>.safetensors   tensor "frames": U8 [T, SIZE, SIZE, 3] RGB, metadata source, fps,
#                            original_size, frames, settings
#   OUT/index.json           {"version": 1, "clips": [{name, file, class_id, frames, height,
#                            width, fps, source}, ...]}, class ids by sorted name
# The format is read by LoadClips (datasets/clips.h) and described in docs/datasets.md.
#
# Usage: datasets/prepare_clips.sh [--out DIR] [--size PIXELS] [--frames MAX] [--fps FPS]
#                                  [--force] [--no-install] [--source VIDEO]...
#   --source VIDEO  use these videos (.gz allowed) instead of opencv-doc's; repeatable
#   --force         decode again even where OUT/<name>.safetensors exists
#   --no-install    fail instead of installing opencv-doc when it is missing
# Idempotent: a clip written before with the same settings is kept unless --force; index.json
# is rewritten every run.
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out_dir="$script_dir/clips"
size=64
max_frames=256
fps=10
force=0
install=1
sources=()
# opencv-doc files we use; the allowlist keeps film excerpts out.
wanted_names="vtest tree box cup"

die() {
  echo "prepare_clips.sh: $*" >&2
  exit 1
}

while [ $# -gt 0 ]; do
  case "$1" in
    --out) out_dir=${2:?--out needs a folder}; shift 2 ;;
    --size) size=${2:?--size needs a number}; shift 2 ;;
    --frames) max_frames=${2:?--frames needs a number}; shift 2 ;;
    --fps) fps=${2:?--fps needs a number}; shift 2 ;;
    --force) force=1; shift ;;
    --no-install) install=0; shift ;;
    --source) sources+=("${2:?--source needs a video file}"); shift 2 ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[[ "$size" =~ ^[1-9][0-9]*$ ]] || die "--size must be a positive integer (got '$size')"
[[ "$max_frames" =~ ^[1-9][0-9]*$ ]] || die "--frames must be a positive integer (got '$max_frames')"
[[ "$fps" =~ ^[0-9]+(\.[0-9]+)?$ ]] && [ "$fps" != 0 ] || die "--fps must be a positive number (got '$fps')"

command -v ffmpeg >/dev/null 2>&1 || die "ffmpeg not found; install it (Debian: apt-get install ffmpeg)"
command -v ffprobe >/dev/null 2>&1 || die "ffprobe not found; it comes with ffmpeg (Debian: apt-get install ffmpeg)"

if [ ${#sources[@]} -eq 0 ]; then
  if ! dpkg -s opencv-doc >/dev/null 2>&1; then
    [ "$install" = 1 ] || die "opencv-doc is not installed (apt-get install opencv-doc), or pass --source"
    echo "installing opencv-doc (about 95 MB) for its sample videos..."
    if [ "$(id -u)" = 0 ]; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends opencv-doc
    elif command -v sudo >/dev/null 2>&1; then
      sudo DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends opencv-doc
    else
      die "opencv-doc is missing and neither root nor sudo is available to install it"
    fi
  fi
  while IFS= read -r file; do
    base=$(basename "$file")
    base=${base%.gz}
    stem=${base%.*}
    for wanted in $wanted_names; do
      [ "$stem" = "$wanted" ] && sources+=("$file")
    done
  done < <(dpkg -L opencv-doc | grep -E '\.(avi|mp4)(\.gz)?$' | sort)
  [ ${#sources[@]} -gt 0 ] || die "opencv-doc ships none of: $wanted_names"
fi

settings="fps=$fps size=$size max_frames=$max_frames"
mkdir -p "$out_dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Writes the 8-byte little-endian length that starts a safetensors file.
write_u64_le() {
  local n=$1 i
  for i in 0 1 2 3 4 5 6 7; do
    printf "\\x$(printf %02x $(((n >> (8 * i)) & 255)))"
  done
}

json_escape() {
  printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g'
}

# Frame count of a clip this script wrote with the same settings, or nothing when the file was
# written with other settings (or by something else) and must be decoded again.
existing_frames() {
  local file=$1 n
  n=$(od -An -t u8 -N 8 "$file" | tr -d ' ')
  [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -lt 65536 ] || return 0
  # head stops reading the file itself; a consumer that quits early would SIGPIPE under pipefail.
  head -c "$((n + 8))" "$file" | tail -c "$n" | grep -F "\"settings\":\"$settings\"" |
    sed -n 's/.*"frames":{"dtype":"U8","shape":\[\([0-9]*\),.*/\1/p' || true
}

declare -A clip_frames clip_source
names=()
for src in "${sources[@]}"; do
  [ -f "$src" ] || die "$src: no such video file"
  base=$(basename "$src")
  base=${base%.gz}
  name=${base%.*}
  [[ "$name" =~ ^[A-Za-z0-9_.-]+$ ]] || die "$src: clip name '$name' must use letters, digits, '_', '.', '-'"
  [ -z "${clip_source[$name]+x}" ] || die "$src: a second video named '$name'"
  target="$out_dir/$name.safetensors"
  names+=("$name")
  clip_source[$name]=$src

  if [ "$force" = 0 ] && [ -f "$target" ]; then
    frames=$(existing_frames "$target")
    if [ -n "$frames" ]; then
      clip_frames[$name]=$frames
      echo "$name: kept $target ($frames frames)"
      continue
    fi
  fi

  input=$src
  if [[ "$src" == *.gz ]]; then
    input="$work/$base"
    zcat "$src" >"$input"
  fi
  original=$(ffprobe -v error -select_streams v:0 -show_entries stream=width,height -of csv=p=0:s=x "$input" | sed -n 1p)
  [ -n "$original" ] || die "$src: ffprobe found no video stream"
  echo "$name: decoding $src ($original) at $fps fps to ${size}x${size}, at most $max_frames frames"
  raw="$work/$name.rgb"
  ffmpeg -nostdin -v error -i "$input" -an \
    -vf "fps=$fps,crop='min(iw,ih)':'min(iw,ih)',scale=$size:$size:flags=area" \
    -frames:v "$max_frames" -pix_fmt rgb24 -f rawvideo -y "$raw" ||
    die "$src: ffmpeg failed to decode"
  bytes=$(stat -c %s "$raw")
  frame_bytes=$((size * size * 3))
  frames=$((bytes / frame_bytes))
  [ "$frames" -gt 0 ] && [ $((frames * frame_bytes)) -eq "$bytes" ] ||
    die "$src: ffmpeg produced $bytes bytes, not a whole number of ${size}x${size} RGB frames"

  header="{\"__metadata__\":{\"source\":\"$(json_escape "$src")\",\"fps\":\"$fps\",\"original_size\":\"$original\",\"frames\":\"$frames\",\"settings\":\"$settings\"},\"frames\":{\"dtype\":\"U8\",\"shape\":[$frames,$size,$size,3],\"data_offsets\":[0,$bytes]}}"
  while [ $((${#header} % 8)) -ne 0 ]; do header+=" "; done
  {
    write_u64_le "${#header}"
    printf '%s' "$header"
    cat "$raw"
  } >"$target.tmp"
  mv "$target.tmp" "$target"
  rm -f "$raw" "$work/$base"
  clip_frames[$name]=$frames
  echo "$name: wrote $target ($frames frames, $bytes bytes)"
done

index="$out_dir/index.json"
{
  echo '{'
  echo '  "version": 1,'
  echo '  "clips": ['
  class_id=0
  sorted=$(printf '%s\n' "${names[@]}" | sort)
  count=$(printf '%s\n' "$sorted" | wc -l)
  for name in $sorted; do
    sep=","
    [ $((class_id + 1)) -eq "$count" ] && sep=""
    printf '    {"name": "%s", "file": "%s.safetensors", "class_id": %d, "frames": %d, "height": %d, "width": %d, "fps": %s, "source": "%s"}%s\n' \
      "$name" "$name" "$class_id" "${clip_frames[$name]}" "$size" "$size" "$fps" "$(json_escape "${clip_source[$name]}")" "$sep"
    class_id=$((class_id + 1))
  done
  echo '  ]'
  echo '}'
} >"$index.tmp"
mv "$index.tmp" "$index"
echo "wrote $index (${#names[@]} clips)"
