// CRC-32C (Castagnoli), the checksum of checkpoint chunks: the SSE4.2 instruction where the CPU
// has it (about 8 GB/s on one core), else a table. Both give the same value.
#pragma once

#include <cstddef>
#include <cstdint>

namespace titan {

// Extends `crc` (0 for a fresh checksum) over `size` bytes.
uint32_t crc32c(uint32_t crc, const void* data, size_t size);

}  // namespace titan
