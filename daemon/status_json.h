// The JSON form of `status` (schema 1, docs/control-protocol.md). mirrorctl
// renders its human table from this JSON, never from our own text.
#pragma once

#include <nlohmann/json.hpp>

#include "kernel_device.h"
#include "volume.h"

namespace mirror {

// `device` is null when the node attaches no kernel device.
nlohmann::json status_to_json(const VolumeStatus& st, const DeviceStatus* device = nullptr);

}  // namespace mirror
