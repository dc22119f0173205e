#include "train/contact_sheet.h"

#include <algorithm>
#include <array>
#include <sstream>
#include <fstream>

#include "core/error.h"

namespace sparsetune {

namespace {

// CRC-32 (ISO-HDLC polynomial, reflected), as PNG chunks use.
uint32_t Crc32(const std::string& bytes, size_t begin) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t n = 0; n < 256; ++n) {
      uint32_t c = n;
      for (int k = 0; k < 8; ++k) c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[n] = c;
    }
    return t;
  }();
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = begin; i < bytes.size(); ++i) {
    c = table[(c ^ static_cast<uint8_t>(bytes[i])) & 0xFFu] ^ (c >> 8);
  }
  return c ^ 0xFFFFFFFFu;
}

uint32_t Adler32(const std::string& bytes) {
  uint32_t a = 1, b = 0;
  for (char ch : bytes) {
    a = (a + static_cast<uint8_t>(ch)) % 65521u;
    b = (b + a) % 65521u;
  }
  return (b << 16) | a;
}

void PutBigEndian(std::string& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((v >> shift) & 0xFFu));
}

void PutChunk(std::string& out, const char* type, const std::string& data) {
  PutBigEndian(out, static_cast<uint32_t>(data.size()));
  const size_t crc_begin = out.size();
  out.append(type, 4);
  out += data;
  PutBigEndian(out, Crc32(out, crc_begin));
}

}  // namespace

torch::Tensor ContactSheet(const torch::Tensor& video, int64_t scale, int64_t gap) {
  torch::Tensor v = video.detach();
  if (v.dim() == 5 && v.size(0) == 1) v = v.squeeze(0);
  if (v.dim() != 4 || v.size(0) != 3 || v.numel() == 0) {
    std::ostringstream s;
    s << "contact sheet: video must be [1, 3, T, H, W] or [3, T, H, W]; got " << video.sizes();
    throw InputError(s.str());
  }
  if (scale < 1 || scale > 16) throw InputError("contact sheet: scale must be in [1, 16]");
  if (gap < 0 || gap > 64) throw InputError("contact sheet: gap must be in [0, 64]");
  const int64_t t = v.size(1), h = v.size(2), w = v.size(3);
  // [3, T, H, W] -> [T, H s, W s, 3] bytes, rounding to the nearest level.
  torch::Tensor frames = (v.to(torch::kCPU, torch::kFloat32).clamp(0.0, 1.0) * 255.0).round()
                             .to(torch::kUInt8)
                             .permute({1, 2, 3, 0})
                             .repeat_interleave(scale, 1)
                             .repeat_interleave(scale, 2);
  const int64_t fw = w * scale;
  torch::Tensor sheet = torch::full({h * scale, t * fw + (t - 1) * gap, 3}, 255, torch::kUInt8);
  for (int64_t i = 0; i < t; ++i) sheet.narrow(1, i * (fw + gap), fw).copy_(frames[i]);
  return sheet;
}

std::string EncodePng(const torch::Tensor& rgb) {
  if (rgb.dim() != 3 || rgb.size(2) != 3 || rgb.scalar_type() != torch::kUInt8 ||
      rgb.size(0) < 1 || rgb.size(1) < 1 || rgb.size(0) > (1 << 24) || rgb.size(1) > (1 << 24)) {
    std::ostringstream s;
    s << "PNG: image must be uint8 [H, W, 3] and not empty; got " << rgb.scalar_type() << " "
      << rgb.sizes();
    throw InputError(s.str());
  }
  const torch::Tensor image = rgb.to(torch::kCPU).contiguous();
  const auto h = static_cast<uint32_t>(image.size(0));
  const auto w = static_cast<uint32_t>(image.size(1));
  const size_t row = static_cast<size_t>(w) * 3;
  // Scanlines, each with filter type 0 (none) in front.
  std::string raw;
  raw.reserve((row + 1) * h);
  const char* pixels = reinterpret_cast<const char*>(image.data_ptr<uint8_t>());
  for (uint32_t y = 0; y < h; ++y) {
    raw.push_back('\0');
    raw.append(pixels + y * row, row);
  }
  // zlib stream (deflate, 32K window, no preset dictionary; header check bits make 0x7801 a
  // multiple of 31) of stored blocks of at most 65535 bytes, then the Adler-32 of the raw data.
  std::string z = {'\x78', '\x01'};
  size_t pos = 0;
  do {
    const size_t len = std::min<size_t>(65535, raw.size() - pos);
    const bool last = pos + len == raw.size();
    z.push_back(last ? '\x01' : '\x00');
    z.push_back(static_cast<char>(len & 0xFFu));
    z.push_back(static_cast<char>((len >> 8) & 0xFFu));
    z.push_back(static_cast<char>(~len & 0xFFu));
    z.push_back(static_cast<char>((~len >> 8) & 0xFFu));
    z.append(raw, pos, len);
    pos += len;
  } while (pos < raw.size());
  PutBigEndian(z, Adler32(raw));

  std::string png = "\x89PNG\r\n\x1a\n";
  std::string ihdr;
  PutBigEndian(ihdr, w);
  PutBigEndian(ihdr, h);
  ihdr += std::string{'\x08', '\x02', '\x00', '\x00', '\x00'};  // 8-bit RGB, deflate, filter 0, no interlace
  PutChunk(png, "IHDR", ihdr);
  PutChunk(png, "IDAT", z);
  PutChunk(png, "IEND", "");
  return png;
}

void WritePng(const std::filesystem::path& path, const torch::Tensor& rgb) {
  const std::string bytes = EncodePng(rgb);
  std::ofstream out(path, std::ios::binary);
  if (!out) throw RunError(path.string() + ": cannot open for writing");
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw RunError(path.string() + ": write failed");
}

}  // namespace sparsetune
