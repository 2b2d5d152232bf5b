#!/usr/bin/env bash
# Download and unpack COCO 2014 (images + caption annotations) and Karpathy's splits.
#   scripts/download_coco.sh [ROOT]        (default ROOT: data/coco2014, about 19 GB unpacked)
# Then: capgen-prepare data=coco2014 data.root=ROOT cache_dir=ROOT/cache
#       capgen-train   data=coco2014 data.root=ROOT
# Needs internet, curl and unzip. Safe to re-run: finished parts are skipped, and an
# interrupted download resumes (curl -C -).
set -euo pipefail
ROOT=${1:-data/coco2014}
mkdir -p "$ROOT"
cd "$ROOT"

fetch() {  # fetch URL FILE: resumable download, then a zip integrity check
  local url=$1 file=$2
  if [ -f "$file.done" ]; then return; fi
  echo "downloading $url"
  curl -fL -C - -o "$file" "$url"
  unzip -tq "$file" >/dev/null
  touch "$file.done"
}

unpack() {  # unpack FILE DIR: skip when DIR was fully unpacked before
  local file=$1 dir=$2
  if [ -f "$dir/.unpacked" ]; then return; fi
  echo "unpacking $file"
  unzip -q -o "$file"
  touch "$dir/.unpacked"
}

fetch http://images.cocodataset.org/zips/train2014.zip train2014.zip
fetch http://images.cocodataset.org/zips/val2014.zip val2014.zip
fetch http://images.cocodataset.org/annotations/annotations_trainval2014.zip annotations_trainval2014.zip
# Karpathy's splits (dataset_coco.json, dataset_flickr8k.json, dataset_flickr30k.json).
fetch https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip caption_datasets.zip

mkdir -p train2014 val2014 annotations
unpack train2014.zip train2014
unpack val2014.zip val2014
unpack annotations_trainval2014.zip annotations
if [ ! -f dataset_coco.json ]; then unzip -q -o caption_datasets.zip dataset_coco.json; fi
echo "COCO 2014 is ready in $(pwd): train2014/ val2014/ annotations/ dataset_coco.json"
echo "(the zips can be deleted now: rm ./*.zip ./*.zip.done)"
