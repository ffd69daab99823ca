// charon_client.hpp: a header-only C++17 client for charon protocol v2 (proto-spec/charon-v2.md).
//
// It lets a Geant4 application (or any C++ program) offload optical photons to `charon serve` or a
// charon router: HELLO with the run's seed, a geometry check against the server's WELCOME (detector
// fingerprint and the sha256 digest of the PMT positions), then many events per SIMULATE message
// inside the server's credit window, each event's hits handed to a callback as it arrives.
// Dependencies: libzmq's C API (Debian: libzmq3-dev) and the C++17 standard library. Link -lzmq.
//
//   charon::Client client("tcp://127.0.0.1:5555");
//   charon::Welcome w = client.hello(/*seed=*/42);
//   if (w.pmt_digest != charon::pmt_digest(my_x, my_y, my_z)) { /* wrong geometry */ }
//   client.simulate_many(events, [](std::size_t index, const charon::Result& r) { ... });
#pragma once

#include <zmq.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <deque>
#include <fstream>
#include <functional>
#include <sstream>
#include <map>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace charon {

inline constexpr char kMagic[] = "CHARON/2";  // frame 0 of every v2 message (8 bytes)
inline constexpr std::uint64_t kNoTag = ~std::uint64_t{0};
inline constexpr std::uint32_t kHasPositions = 0x1;

// v2 error codes (charon-v2.md section 6).
enum class ErrorCode : std::uint32_t {
  ok = 0, malformed = 1, unknown_command = 2, version = 3, no_session = 4, credit_exceeded = 5,
  too_large = 6, queue_full = 7, deadline = 8, no_workers = 9, simulation_failed = 10,
  retries_exhausted = 11,
};

inline bool retryable(ErrorCode c) {
  switch (c) {
    case ErrorCode::no_session: case ErrorCode::credit_exceeded: case ErrorCode::queue_full:
    case ErrorCode::deadline: case ErrorCode::no_workers: case ErrorCode::retries_exhausted:
      return true;
    default:
      return false;
  }
}

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// One event's photons (mm, unit vectors, nm, ns, Chroma flag bits), as in v1 PHOTONDATA.
struct Event {
  std::uint32_t event_id = 0;
  std::vector<float> x, y, z, dx, dy, dz, polx, poly, polz, wavelength, time;
  std::vector<std::uint32_t> flags;

  std::size_t size() const { return x.size(); }
  void add(float px, float py, float pz, float ux, float uy, float uz, float ex, float ey, float ez,
           float wavelength_nm, float time_ns, std::uint32_t flag) {
    x.push_back(px); y.push_back(py); z.push_back(pz);
    dx.push_back(ux); dy.push_back(uy); dz.push_back(uz);
    polx.push_back(ex); poly.push_back(ey); polz.push_back(ez);
    wavelength.push_back(wavelength_nm); time.push_back(time_ns); flags.push_back(flag);
  }
};

// One event's outcome: its hits (x, y, z filled when has_positions), or an error code and message.
struct Result {
  std::uint32_t event_id = 0;
  ErrorCode code = ErrorCode::ok;
  std::string message;
  bool has_positions = false;
  std::vector<std::uint32_t> channel, flags;
  std::vector<float> dx, dy, dz, polx, poly, polz, wavelength, time, x, y, z;

  bool ok() const { return code == ErrorCode::ok; }
  std::size_t size() const { return channel.size(); }
};

// CURVE keys of a client of a server with security.curve_secret_key set: the server's public key and
// the client's own pair, Z85 text (40 characters each), as charon's certificate files hold them.
struct CurveKeys {
  std::string server_public, public_key, secret_key;

  // From ZeroMQ certificate files: the server's NAME.key and this client's NAME.key_secret
  // (`charon keys generate` writes both).
  static CurveKeys from_files(const std::string& server_cert, const std::string& client_secret_cert) {
    CurveKeys k;
    k.server_public = read_key(server_cert, "public-key");
    k.public_key = read_key(client_secret_cert, "public-key");
    k.secret_key = read_key(client_secret_cert, "secret-key");
    return k;
  }

 private:
  static std::string read_key(const std::string& path, const std::string& name);
};

struct Welcome {
  std::uint32_t version = 0;
  std::string engine, fingerprint, pmt_digest;
  std::uint64_t n_channels = 0, credit = 0, max_events_per_message = 0, max_photons_per_message = 0;
  std::uint64_t seed = 0;
  bool hit_positions = false;
};

namespace detail {

inline void put_u32(std::string& s, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
inline void put_u64(std::string& s, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
inline std::uint32_t get_u32(const unsigned char* p) {
  return std::uint32_t(p[0]) | std::uint32_t(p[1]) << 8 | std::uint32_t(p[2]) << 16 | std::uint32_t(p[3]) << 24;
}
inline std::uint64_t get_u64(const unsigned char* p) {
  return std::uint64_t(get_u32(p)) | std::uint64_t(get_u32(p + 4)) << 32;
}
template <typename T>
void append_le(std::string& out, const std::vector<T>& v) {  // 4-byte values, little-endian on the wire
  static_assert(sizeof(T) == 4, "v2 arrays hold 4-byte values");
  for (const T& value : v) {
    std::uint32_t bits;
    std::memcpy(&bits, &value, 4);
    put_u32(out, bits);
  }
}
template <typename T>
std::vector<T> read_le(const unsigned char* p, std::size_t n) {
  std::vector<T> v(n);
  for (std::size_t i = 0; i < n; ++i) {
    std::uint32_t bits = get_u32(p + 4 * i);
    std::memcpy(&v[i], &bits, 4);
  }
  return v;
}

// The flat JSON objects of HELLO/WELCOME: string, integer and boolean values (others are skipped).
struct JsonValue {
  std::string text;
  bool is_string = false;
};
inline std::map<std::string, JsonValue> parse_flat_json(const std::string& s) {
  std::map<std::string, JsonValue> out;
  std::size_t i = 0;
  auto ws = [&] { while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i; };
  auto str = [&]() -> std::string {
    if (i >= s.size() || s[i] != '"') throw Error("WELCOME: expected a JSON string");
    std::string r;
    for (++i; i < s.size() && s[i] != '"'; ++i) {
      if (s[i] == '\\' && i + 1 < s.size()) ++i;
      r.push_back(s[i]);
    }
    if (i >= s.size()) throw Error("WELCOME: unterminated JSON string");
    ++i;
    return r;
  };
  ws();
  if (i >= s.size() || s[i] != '{') throw Error("WELCOME body is not a JSON object");
  ++i;
  for (;;) {
    ws();
    if (i < s.size() && s[i] == '}') break;
    std::string key = str();
    ws();
    if (i >= s.size() || s[i] != ':') throw Error("WELCOME: expected ':' in JSON");
    ++i;
    ws();
    JsonValue v;
    if (i < s.size() && s[i] == '"') {
      v.text = str();
      v.is_string = true;
    } else {
      std::size_t start = i;
      int depth = 0;
      while (i < s.size() && (depth > 0 || (s[i] != ',' && s[i] != '}'))) {
        if (s[i] == '{' || s[i] == '[') ++depth;
        if (s[i] == '}' || s[i] == ']') --depth;
        ++i;
      }
      v.text = s.substr(start, i - start);
      while (!v.text.empty() && std::isspace(static_cast<unsigned char>(v.text.back()))) v.text.pop_back();
    }
    out[key] = v;
    ws();
    if (i < s.size() && s[i] == ',') { ++i; continue; }
    if (i < s.size() && s[i] == '}') break;
    throw Error("WELCOME: malformed JSON object");
  }
  return out;
}
inline std::uint64_t json_uint(const std::map<std::string, JsonValue>& m, const char* key) {
  auto it = m.find(key);
  if (it == m.end() || it->second.is_string || it->second.text.empty()) throw Error(std::string("WELCOME lacks ") + key);
  return std::stoull(it->second.text);
}
inline std::string json_str(const std::map<std::string, JsonValue>& m, const char* key) {
  auto it = m.find(key);
  if (it == m.end() || !it->second.is_string) throw Error(std::string("WELCOME lacks ") + key);
  return it->second.text;
}

// SHA-256 (FIPS 180-4), for the PMT positions digest. Round constants are the first 32 bits of the
// fractional parts of the cube roots of the first 64 primes (square roots of the first 8 for H0).
class Sha256 {
 public:
  Sha256() {
    static const auto tables = make_tables();
    std::copy(tables.second.begin(), tables.second.end(), h_);
    k_ = tables.first.data();
  }
  void update(const unsigned char* p, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
      block_[fill_++] = p[i];
      if (fill_ == 64) { compress(); fill_ = 0; }
    }
    bits_ += std::uint64_t(n) * 8;
  }
  std::string hexdigest() {
    std::uint64_t bits = bits_;
    unsigned char pad = 0x80;
    update(&pad, 1);
    unsigned char zero = 0;
    while (fill_ != 56) update(&zero, 1);
    unsigned char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(bits >> (56 - 8 * i));
    update(len, 8);
    static const char* hex = "0123456789abcdef";
    std::string out;
    for (std::uint32_t word : h_)
      for (int i = 28; i >= 0; i -= 4) out.push_back(hex[(word >> i) & 0xf]);
    return out;
  }

 private:
  static std::uint32_t frac_bits(long double v) {
    long double f = v - std::floor(v);
    return static_cast<std::uint32_t>(std::floor(f * 4294967296.0L));
  }
  static std::pair<std::vector<std::uint32_t>, std::vector<std::uint32_t>> make_tables() {
    std::vector<std::uint32_t> k, h;
    for (int n = 2; k.size() < 64; ++n) {
      bool prime = true;
      for (int d = 2; d * d <= n; ++d) prime = prime && (n % d != 0);
      if (!prime) continue;
      if (h.size() < 8) h.push_back(frac_bits(std::sqrt(static_cast<long double>(n))));
      k.push_back(frac_bits(std::cbrt(static_cast<long double>(n))));
    }
    return {k, h};
  }
  static std::uint32_t rotr(std::uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }
  void compress() {
    std::uint32_t w[64];
    for (int i = 0; i < 16; ++i)
      w[i] = std::uint32_t(block_[4 * i]) << 24 | std::uint32_t(block_[4 * i + 1]) << 16 |
             std::uint32_t(block_[4 * i + 2]) << 8 | std::uint32_t(block_[4 * i + 3]);
    for (int i = 16; i < 64; ++i) {
      std::uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      std::uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    std::uint32_t a = h_[0], b = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6], hh = h_[7];
    for (int i = 0; i < 64; ++i) {
      std::uint32_t t1 = hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k_[i] + w[i];
      std::uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      hh = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h_[0] += a; h_[1] += b; h_[2] += c; h_[3] += d; h_[4] += e; h_[5] += f; h_[6] += g; h_[7] += hh;
  }
  std::uint32_t h_[8];
  const std::uint32_t* k_;
  unsigned char block_[64] = {};
  std::size_t fill_ = 0;
  std::uint64_t bits_ = 0;
};

}  // namespace detail

inline std::string CurveKeys::read_key(const std::string& path, const std::string& name) {
  std::ifstream in(path);
  if (!in) throw Error("cannot read CURVE certificate " + path);
  std::stringstream text;
  text << in.rdbuf();
  std::string s = text.str();
  std::size_t at = s.find(name + " = \"");
  if (at == std::string::npos) throw Error(path + " holds no " + name);
  at += name.size() + 4;
  std::size_t end = s.find('"', at);
  if (end == std::string::npos || end - at != 40) throw Error(path + ": " + name + " is not 40 Z85 characters");
  return s.substr(at, 40);
}

// The PMT positions digest WELCOME carries: sha256 of the x, y, z float32 arrays (mm, channel order,
// little-endian) one after another. Compare it with Welcome::pmt_digest before a run.
inline std::string pmt_digest(const std::vector<float>& x, const std::vector<float>& y, const std::vector<float>& z) {
  detail::Sha256 h;
  for (const auto* v : {&x, &y, &z}) {
    std::string bytes;
    detail::append_le(bytes, *v);
    h.update(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
  }
  return h.hexdigest();
}

// A v2 session on one DEALER connection. Not thread-safe: one thread per Client.
class Client {
 public:
  using Callback = std::function<void(std::size_t index, const Result& result)>;

  explicit Client(const std::string& endpoint, int timeout_ms = 30000, int retries = 3,
                  const CurveKeys* curve = nullptr)
      : endpoint_(endpoint), timeout_ms_(timeout_ms), retries_(retries) {
    ctx_ = zmq_ctx_new();
    if (!ctx_) throw Error("zmq_ctx_new failed");
    sock_ = zmq_socket(ctx_, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(sock_, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(sock_, ZMQ_SNDHWM, &zero, sizeof zero);
    zmq_setsockopt(sock_, ZMQ_RCVHWM, &zero, sizeof zero);
    if (curve) {  // Z85 text with its terminating NUL (41 bytes), as libzmq takes it
      if (zmq_setsockopt(sock_, ZMQ_CURVE_SERVERKEY, curve->server_public.c_str(), 41) != 0 ||
          zmq_setsockopt(sock_, ZMQ_CURVE_PUBLICKEY, curve->public_key.c_str(), 41) != 0 ||
          zmq_setsockopt(sock_, ZMQ_CURVE_SECRETKEY, curve->secret_key.c_str(), 41) != 0) {
        close();
        throw Error(std::string("CURVE keys refused by libzmq: ") + zmq_strerror(zmq_errno()));
      }
    }
    if (zmq_connect(sock_, endpoint.c_str()) != 0) {
      close();
      throw Error("cannot connect to " + endpoint + ": " + zmq_strerror(zmq_errno()));
    }
  }
  ~Client() { close(); }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // HELLO with the run's seed; retried while a router has no worker yet, within the timeout.
  Welcome hello(std::uint64_t seed, const std::string& client_name = "charon-cpp") {
    seed_ = seed;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms_);
    int pause_ms = 50;
    for (;;) {
      std::string name;
      for (char c : client_name.substr(0, 128))
        if (c != '"' && c != '\\' && static_cast<unsigned char>(c) >= 0x20) name.push_back(c);
      std::string body = "{\"client\":\"" + name + "\",\"seed\":" + std::to_string(seed) + ",\"version\":2}";
      send({std::string(kMagic, 8), "H", body});
      std::vector<std::string> reply;
      if (!receive(reply, remaining_ms(deadline))) throw Error(endpoint_ + ": no WELCOME within the timeout");
      if (reply.size() >= 1 && reply[0] != std::string(kMagic, 8))
        throw Error(endpoint_ + " answered HELLO with '" + reply[0] + "': it does not speak v2");
      if (reply.size() == 3 && reply[1] == "W") {
        welcome_ = parse_welcome(reply[2]);
        return welcome_;
      }
      if (reply.size() == 4 && reply[1] == "E") {
        auto code = static_cast<ErrorCode>(detail::get_u32(bytes(reply[2]) + 12));
        if (!retryable(code)) throw Error("HELLO refused: " + reply[3]);
        if (remaining_ms(deadline) <= pause_ms) throw Error(endpoint_ + ": no worker behind the server: " + reply[3]);
        zmq_poll(nullptr, 0, pause_ms);
        pause_ms = std::min(pause_ms * 2, 1000);
        continue;
      }
      throw Error("unexpected reply to HELLO");
    }
  }

  const Welcome& welcome() const { return welcome_; }

  // v1 DETECTOR_INFO on the same connection: PMT positions (mm) and types, by channel.
  void detector_info(std::vector<float>& x, std::vector<float>& y, std::vector<float>& z,
                     std::vector<std::int32_t>& type) {
    send({"DETECTOR_INFO"});
    std::vector<std::string> reply;
    if (!receive(reply, timeout_ms_)) throw Error(endpoint_ + ": no DETECTOR_INFO reply");
    if (reply.size() < 5 || reply[0] != "DETECTOR_INFO") throw Error("invalid DETECTOR_INFO reply");
    std::size_t n = reply[1].size() / 4;
    x = detail::read_le<float>(bytes(reply[1]), n);
    y = detail::read_le<float>(bytes(reply[2]), n);
    z = detail::read_le<float>(bytes(reply[3]), n);
    type = detail::read_le<std::int32_t>(bytes(reply[4]), n);
  }

  // Simulate every event, as many in flight as the credit allows; `done` is called once per event
  // (in the order results arrive) with its hits or its error. Retryable errors are resent up to
  // `retries` times. Throws Error when the server stays silent for the timeout.
  void simulate_many(const std::vector<Event>& events, const Callback& done) {
    if (welcome_.credit == 0) throw Error("simulate_many before hello()");
    std::deque<std::size_t> todo;
    for (std::size_t i = 0; i < events.size(); ++i) todo.push_back(i);
    std::vector<int> attempts(events.size(), 0);
    std::vector<bool> pending(events.size(), false);  // sent and not yet answered
    std::size_t in_flight = 0, finished = 0;
    using Clock = std::chrono::steady_clock;
    // Resends after the server had no room wait a backoff (50 ms doubling to 2 s): (due, index).
    std::vector<std::pair<Clock::time_point, std::size_t>> delayed;
    Clock::time_point heard = Clock::now();
    while (finished < events.size()) {
      for (auto it = delayed.begin(); it != delayed.end();) {
        if (it->first <= Clock::now()) { todo.push_front(it->second); it = delayed.erase(it); } else { ++it; }
      }
      while (!todo.empty() && in_flight < welcome_.credit) {
        std::vector<std::size_t> batch;
        std::uint64_t photons = 0;
        while (!todo.empty() && in_flight + batch.size() < welcome_.credit &&
               batch.size() < welcome_.max_events_per_message) {
          std::size_t i = todo.front();
          std::uint64_t n = events[i].size();
          if (n > welcome_.max_photons_per_message) {  // can never be sent
            todo.pop_front();
            Result r;
            r.event_id = events[i].event_id;
            r.code = ErrorCode::too_large;
            r.message = "event larger than the server's max_photons_per_message";
            ++finished;
            done(i, r);
            continue;
          }
          if (photons + n > welcome_.max_photons_per_message) break;
          todo.pop_front();
          batch.push_back(i);
          photons += n;
        }
        if (batch.empty()) break;
        send_simulate(events, batch);
        for (std::size_t i : batch) { ++attempts[i]; pending[i] = true; }
        in_flight += batch.size();
      }
      if (finished == events.size()) break;
      std::vector<std::string> reply;
      auto limit = heard + std::chrono::milliseconds(timeout_ms_);
      auto until = in_flight ? limit : Clock::time_point::max();
      for (const auto& d : delayed) until = std::min(until, d.first);
      if (!receive(reply, remaining_ms(until) + 1)) {
        if (in_flight && Clock::now() >= limit)
          throw Error(endpoint_ + ": no v2 reply within the timeout (" + std::to_string(in_flight) + " in flight)");
        continue;
      }
      heard = Clock::now();
      if (reply.size() != 4 || reply[0] != std::string(kMagic, 8)) throw Error("non-v2 reply on a v2 connection");
      const unsigned char* head = bytes(reply[2]);
      std::uint64_t tag = detail::get_u64(head);
      if (reply[1] == "E") {
        if (reply[2].size() != 16) throw Error("invalid ERROR head");
        if (tag == kNoTag) throw Error("the server rejected a message: " + reply[3]);
        if (tag >= events.size() || !pending[tag]) continue;  // not an event of ours in flight
        auto code = static_cast<ErrorCode>(detail::get_u32(head + 12));
        pending[tag] = false;
        --in_flight;
        if (code == ErrorCode::no_session) hello(seed_);
        if (retryable(code) && attempts[tag] <= retries_) {
          if (code == ErrorCode::credit_exceeded || code == ErrorCode::no_session) {
            todo.push_front(tag);
          } else {
            int backoff_ms = std::min(50 << std::min(attempts[tag] - 1, 6), 2000);
            delayed.emplace_back(Clock::now() + std::chrono::milliseconds(backoff_ms), tag);
          }
          continue;
        }
        Result r;
        r.event_id = detail::get_u32(head + 8);
        r.code = code;
        r.message = reply[3];
        ++finished;
        done(tag, r);
      } else if (reply[1] == "R") {
        if (reply[2].size() != 20 || tag >= events.size()) throw Error("invalid RESULT head");
        if (!pending[tag]) continue;
        pending[tag] = false;
        --in_flight;
        ++finished;
        done(tag, decode_result(head, reply[3]));
      } else {
        throw Error("unexpected v2 command '" + reply[1] + "'");
      }
    }
  }

 private:
  static const unsigned char* bytes(const std::string& s) { return reinterpret_cast<const unsigned char*>(s.data()); }

  static int remaining_ms(std::chrono::steady_clock::time_point deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    return static_cast<int>(std::clamp<long long>(left.count(), 0, 1 << 30));
  }

  static Welcome parse_welcome(const std::string& body) {
    auto m = detail::parse_flat_json(body);
    Welcome w;
    w.version = static_cast<std::uint32_t>(detail::json_uint(m, "version"));
    if (w.version != 2) throw Error("WELCOME of version " + std::to_string(w.version) + ", expected 2");
    w.engine = detail::json_str(m, "engine");
    w.fingerprint = detail::json_str(m, "fingerprint");
    w.pmt_digest = detail::json_str(m, "pmt_digest");
    w.n_channels = detail::json_uint(m, "n_channels");
    w.credit = detail::json_uint(m, "credit");
    w.max_events_per_message = detail::json_uint(m, "max_events_per_message");
    w.max_photons_per_message = detail::json_uint(m, "max_photons_per_message");
    w.seed = detail::json_uint(m, "seed");
    auto hp = m.find("hit_positions");
    w.hit_positions = hp != m.end() && hp->second.text == "true";
    if (w.credit == 0 || w.max_events_per_message == 0) throw Error("WELCOME grants no credit");
    return w;
  }

  static Result decode_result(const unsigned char* head, const std::string& hits) {
    Result r;
    r.event_id = detail::get_u32(head + 8);
    std::size_t n = detail::get_u32(head + 12);
    std::uint32_t flags = detail::get_u32(head + 16);
    r.has_positions = (flags & kHasPositions) != 0;
    std::size_t arrays = r.has_positions ? 13 : 10;
    if (hits.size() != 4 * n * arrays) throw Error("RESULT hits frame has the wrong size");
    const unsigned char* p = bytes(hits);
    auto f = [&](std::size_t k) { return detail::read_le<float>(p + 4 * n * k, n); };
    r.channel = detail::read_le<std::uint32_t>(p, n);
    r.dx = f(1); r.dy = f(2); r.dz = f(3);
    r.polx = f(4); r.poly = f(5); r.polz = f(6);
    r.wavelength = f(7); r.time = f(8);
    r.flags = detail::read_le<std::uint32_t>(p + 4 * n * 9, n);
    if (r.has_positions) { r.x = f(10); r.y = f(11); r.z = f(12); }
    return r;
  }

  void send_simulate(const std::vector<Event>& events, const std::vector<std::size_t>& batch) {
    std::string table;
    for (std::size_t i : batch) {
      detail::put_u64(table, i);
      detail::put_u32(table, events[i].event_id);
      detail::put_u32(table, static_cast<std::uint32_t>(events[i].size()));
    }
    std::vector<std::string> frames = {std::string(kMagic, 8), "S", table};
    using Field = std::vector<float> Event::*;
    const Field fields[] = {&Event::x, &Event::y, &Event::z, &Event::dx, &Event::dy, &Event::dz, &Event::polx,
                            &Event::poly, &Event::polz, &Event::wavelength, &Event::time};
    for (Field field : fields) {
      std::string column;
      for (std::size_t i : batch) detail::append_le(column, events[i].*field);
      frames.push_back(std::move(column));
    }
    std::string flags;
    for (std::size_t i : batch) detail::append_le(flags, events[i].flags);
    frames.push_back(std::move(flags));
    send(frames);
  }

  void send(const std::vector<std::string>& frames) {
    for (std::size_t i = 0; i < frames.size(); ++i) {
      int more = i + 1 < frames.size() ? ZMQ_SNDMORE : 0;
      if (zmq_send(sock_, frames[i].data(), frames[i].size(), more) < 0)
        throw Error(std::string("zmq_send: ") + zmq_strerror(zmq_errno()));
    }
  }

  bool receive(std::vector<std::string>& frames, int timeout_ms) {
    zmq_pollitem_t item{sock_, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, timeout_ms) <= 0) return false;
    frames.clear();
    for (;;) {
      zmq_msg_t msg;
      zmq_msg_init(&msg);
      if (zmq_msg_recv(&msg, sock_, 0) < 0) {
        zmq_msg_close(&msg);
        throw Error(std::string("zmq_msg_recv: ") + zmq_strerror(zmq_errno()));
      }
      frames.emplace_back(static_cast<const char*>(zmq_msg_data(&msg)), zmq_msg_size(&msg));
      bool more = zmq_msg_more(&msg) != 0;
      zmq_msg_close(&msg);
      if (!more) break;
    }
    if (!frames.empty() && frames[0].empty()) frames.erase(frames.begin());  // a delimiter, if any
    return true;
  }

  void close() {
    if (sock_) { zmq_close(sock_); sock_ = nullptr; }
    if (ctx_) { zmq_ctx_term(ctx_); ctx_ = nullptr; }
  }

  std::string endpoint_;
  int timeout_ms_;
  int retries_;
  void* ctx_ = nullptr;
  void* sock_ = nullptr;
  std::uint64_t seed_ = 0;
  Welcome welcome_;
};

}  // namespace charon
