#include <fstream>
#include <sstream>
#include <string>

#include <torch/torch.h>

#include "core/error.h"
#include "tests/catch.h"
#include "tests/test_util.h"
#include "train/contact_sheet.h"

using namespace sparsetune;

namespace {

// Decodes `png` with Python's zlib (an independent inflate) after checking the signature, every
// chunk's CRC and the IHDR; prints "W H" and the hex of the unfiltered RGB bytes.
const char* kDecoder = R"(
import struct, sys, zlib
data = open(sys.argv[1], 'rb').read()
assert data[:8] == b'\x89PNG\r\n\x1a\n', 'signature'
pos, idat, ihdr = 8, b'', None
while pos < len(data):
    n, = struct.unpack('>I', data[pos:pos + 4]); kind = data[pos + 4:pos + 8]
    body = data[pos + 8:pos + 8 + n]; crc, = struct.unpack('>I', data[pos + 8 + n:pos + 12 + n])
    assert zlib.crc32(kind + body) & 0xffffffff == crc, 'crc of ' + kind.decode()
    if kind == b'IHDR': ihdr = struct.unpack('>IIBBBBB', body)
    if kind == b'IDAT': idat += body
    pos += 12 + n
w, h, depth, color, comp, filt, lace = ihdr
assert (depth, color, comp, filt, lace) == (8, 2, 0, 0, 0), 'ihdr'
raw = zlib.decompress(idat); row = 3 * w
assert len(raw) == h * (row + 1), 'size'
rows = [raw[y * (row + 1):(y + 1) * (row + 1)] for y in range(h)]
assert all(r[0] == 0 for r in rows), 'filter'
print(w, h)
print(b''.join(r[1:] for r in rows).hex())
)";

std::string Hex(const torch::Tensor& bytes) {
  const torch::Tensor c = bytes.contiguous();
  const uint8_t* p = c.data_ptr<uint8_t>();
  std::ostringstream s;
  static const char* digits = "0123456789abcdef";
  for (int64_t i = 0; i < c.numel(); ++i) s << digits[p[i] >> 4] << digits[p[i] & 15];
  return s.str();
}

}  // namespace

TEST_CASE("png: an independent decoder reads back the exact pixels", "[train]") {
  torch::manual_seed(5);
  test::TempDir dir;
  // 300 x 80 RGB = 72,080 raw bytes: more than one 65,535-byte stored block.
  const torch::Tensor image = torch::randint(0, 256, {80, 300, 3}, torch::kUInt8);
  WritePng(dir / "a.png", image);
  test::WriteText(dir / "decode.py", kDecoder);
  const test::CommandResult r = test::RunCommand("python3 " + (dir / "decode.py").string() + " " +
                                                 (dir / "a.png").string());
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  std::istringstream lines(r.out);
  int64_t w = 0, h = 0;
  std::string hex;
  lines >> w >> h >> hex;
  CHECK(w == 300);
  CHECK(h == 80);
  CHECK(hex == Hex(image));
}

TEST_CASE("contact sheet: frames side by side, scaled, with gaps", "[train]") {
  torch::manual_seed(6);
  const torch::Tensor video = torch::rand({1, 3, 5, 6, 7});
  const torch::Tensor sheet = ContactSheet(video, 2, 3);
  REQUIRE(sheet.scalar_type() == torch::kUInt8);
  REQUIRE(sheet.sizes() == torch::IntArrayRef({12, 5 * 14 + 4 * 3, 3}));
  // Frame 3, pixel (row 4, column 5) lands at sheet (8..9, 3*17 + 10..11).
  const torch::Tensor expected = (video[0].select(1, 3).select(1, 4).select(1, 5) * 255).round();
  for (int64_t dy = 0; dy < 2; ++dy) {
    for (int64_t dx = 0; dx < 2; ++dx) {
      CHECK(torch::equal(sheet[8 + dy][3 * 17 + 10 + dx].to(torch::kFloat32), expected));
    }
  }
  CHECK(sheet.narrow(1, 14, 3).eq(255).all().item<bool>());  // the gap after frame 0
  CHECK(ContactSheet(video.squeeze(0)).sizes() == torch::IntArrayRef({6, 5 * 7 + 4 * 2, 3}));
}

TEST_CASE("contact sheet and png: bad input is rejected", "[train]") {
  torch::manual_seed(7);
  REQUIRE_THROWS_AS(ContactSheet(torch::rand({2, 3, 4, 8, 8})), InputError);
  REQUIRE_THROWS_AS(ContactSheet(torch::rand({4, 4, 8, 8})), InputError);
  REQUIRE_THROWS_AS(ContactSheet(torch::rand({3, 4, 8, 8}), 0), InputError);
  REQUIRE_THROWS_AS(ContactSheet(torch::rand({3, 4, 8, 8}), 1, -1), InputError);
  REQUIRE_THROWS_AS(EncodePng(torch::rand({4, 4, 3})), InputError);
  REQUIRE_THROWS_AS(EncodePng(torch::randint(0, 255, {4, 4, 4}, torch::kUInt8)), InputError);
  REQUIRE_THROWS_AS(EncodePng(torch::zeros({0, 4, 3}, torch::kUInt8)), InputError);
  test::TempDir dir;
  REQUIRE_THROWS_AS(WritePng(dir / "no" / "such" / "x.png",
                             torch::randint(0, 255, {4, 4, 3}, torch::kUInt8)),
                    RunError);
}
