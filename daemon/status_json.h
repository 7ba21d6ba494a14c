// The JSON form of `status` (schema 1, docs/control-protocol.md). mirrorctl
// renders its human table from this JSON, never from our own text.
#pragma once

#include <nlohmann/json.hpp>

#include "volume.h"

namespace mirror {

nlohmann::json status_to_json(const VolumeStatus& st);

}  // namespace mirror
