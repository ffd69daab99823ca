// example.cpp: offload generated photons to a charon server over protocol v2 with charon_client.hpp.
//
//   g++ -std=c++17 -O2 -I services/clients/cpp services/clients/cpp/example.cpp -lzmq -o charon-v2-example
//   ./charon-v2-example tcp://127.0.0.1:5555 100 1000            # 100 events of 1000 photons
//   ./charon-v2-example tcp://127.0.0.1:5555 100 1000 --echo     # also check the echo engine's hits
//
// It checks its geometry first (the server's PMT positions, fetched with v1 DETECTOR_INFO on the same
// connection, hashed here and compared with WELCOME's pmt_digest), simulates every event with many
// in flight, and prints one summary line. In a Geant4 application the photons would come from the
// Cerenkov and scintillation processes of one G4Event each, and the hits go to its PMT hit collection.
// Exit status: 0 ok, 1 usage or transport error, 2 an event failed or the echo check failed,
// 3 geometry mismatch.
#include "charon_client.hpp"

#include <cstdio>
#include <cstdlib>
#include <string>

namespace {

// Photons of event `id`: a deterministic isotropic-ish spray from near the origin (no randomness
// library needed): directions from a simple LCG, normalised.
charon::Event make_event(std::uint32_t id, std::size_t n) {
  charon::Event ev;
  ev.event_id = id;
  std::uint64_t state = 0x9e3779b97f4a7c15ULL ^ id;
  auto next = [&] {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<float>((state >> 40) & 0xffffff) / 16777216.0f * 2.0f - 1.0f;
  };
  for (std::size_t i = 0; i < n; ++i) {
    float ux = next(), uy = next(), uz = next();
    float norm = std::sqrt(ux * ux + uy * uy + uz * uz) + 1e-6f;
    ux /= norm; uy /= norm; uz /= norm;
    // Polarisation perpendicular to the direction: u x (0, 0, 1) or u x (1, 0, 0) near the pole.
    float ex = uy, ey = -ux, ez = 0.0f;
    if (std::fabs(uz) > 0.9f) { ex = 0.0f; ey = uz; ez = -uy; }
    float en = std::sqrt(ex * ex + ey * ey + ez * ez);
    ev.add(next(), next(), next(), ux, uy, uz, ex / en, ey / en, ez / en, 420.0f, 0.1f * static_cast<float>(i % 10),
           i % 2 ? 0x400u : 0x800u);
  }
  return ev;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s ENDPOINT EVENTS PHOTONS [--echo] [--seed N] [--retries N] [--expect-digest HEX]\n"
                 "       [--curve-server-key SERVER.key --curve-secret-key CLIENT.key_secret]\n", argv[0]);
    return 1;
  }
  std::string endpoint = argv[1];
  std::size_t n_events = std::strtoul(argv[2], nullptr, 10);
  std::size_t n_photons = std::strtoul(argv[3], nullptr, 10);
  bool echo = false;
  std::uint64_t seed = 0;
  int retries = 3;
  std::string expect_digest, server_cert, client_cert;
  for (int i = 4; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--echo") echo = true;
    else if (a == "--seed" && i + 1 < argc) seed = std::strtoull(argv[++i], nullptr, 10);
    else if (a == "--expect-digest" && i + 1 < argc) expect_digest = argv[++i];
    else if (a == "--retries" && i + 1 < argc) retries = std::atoi(argv[++i]);
    else if (a == "--curve-server-key" && i + 1 < argc) server_cert = argv[++i];
    else if (a == "--curve-secret-key" && i + 1 < argc) client_cert = argv[++i];
    else { std::fprintf(stderr, "unknown argument %s\n", a.c_str()); return 1; }
  }
  try {
    charon::CurveKeys curve;
    if (!server_cert.empty() || !client_cert.empty()) curve = charon::CurveKeys::from_files(server_cert, client_cert);
    const char* timeout = std::getenv("CHARON_CPP_TIMEOUT_MS");  // reply timeout, default 20 s
    charon::Client client(endpoint, timeout ? std::atoi(timeout) : 20000, retries,
                          server_cert.empty() ? nullptr : &curve);
    charon::Welcome w = client.hello(seed, "charon-v2-example");
    std::vector<float> x, y, z;
    std::vector<std::int32_t> type;
    client.detector_info(x, y, z, type);
    std::string digest = charon::pmt_digest(x, y, z);
    if (digest != w.pmt_digest || x.size() != w.n_channels) {
      std::fprintf(stderr, "geometry mismatch: server digest %s, computed %s\n", w.pmt_digest.c_str(), digest.c_str());
      return 3;
    }
    if (!expect_digest.empty() && expect_digest != w.pmt_digest) {
      std::fprintf(stderr, "geometry mismatch: this application's PMTs hash to %s, the server's to %s\n",
                   expect_digest.c_str(), w.pmt_digest.c_str());
      return 3;
    }
    std::vector<charon::Event> events;
    for (std::size_t i = 0; i < n_events; ++i) events.push_back(make_event(static_cast<std::uint32_t>(1000 + i), n_photons));
    std::size_t answered = 0, hits = 0, failed = 0, bad = 0;
    std::vector<int> seen(n_events, 0);
    client.simulate_many(events, [&](std::size_t index, const charon::Result& r) {
      ++answered;
      ++seen[index];
      if (!r.ok()) {
        ++failed;
        std::fprintf(stderr, "event %u failed: code %u: %s\n", r.event_id, static_cast<unsigned>(r.code), r.message.c_str());
        return;
      }
      hits += r.size();
      const charon::Event& ev = events[index];
      if (r.event_id != ev.event_id) ++bad;
      for (std::uint32_t ch : r.channel) if (ch >= w.n_channels) ++bad;
      if (echo) {  // the echo engine: one hit per photon, the photon's own direction and position
        if (r.size() != ev.size() || !r.has_positions || r.dx != ev.dx || r.x != ev.x || r.time != ev.time) ++bad;
        for (std::size_t j = 0; j < r.size(); ++j)
          if (r.channel[j] != j % w.n_channels || (r.flags[j] & 0x4u) == 0) { ++bad; break; }
      }
    });
    for (int s : seen) if (s != 1) ++bad;
    std::printf("charon-v2-example: engine=%s channels=%llu credit=%llu events=%zu answered=%zu photons=%zu hits=%zu "
                "failed=%zu bad=%zu digest=%s\n", w.engine.c_str(), static_cast<unsigned long long>(w.n_channels),
                static_cast<unsigned long long>(w.credit), n_events, answered, n_events * n_photons, hits, failed,
                bad, digest.substr(0, 16).c_str());
    return failed || bad ? 2 : 0;
  } catch (const charon::Error& e) {
    std::fprintf(stderr, "charon-v2-example: %s\n", e.what());
    return 1;
  }
}
