// The example firmware's protocol core (drivers/firmware/pnn_serial_device/pnn_protocol.h) as a
// host program: it plays the device on stdin/stdout (a pseudo-terminal in the tests), with a
// simulated system y = tanh(x W), and reports every drive and safe call on stderr.
//
//   pnn_firmware_host                        the device, drive range [0, 1]
//   pnn_firmware_host LO HI                  the device, drive range [LO, HI] (strtof: "nan" too)
//   pnn_firmware_host dac FULL MAX V...      print pnn::dac_code(V, FULL, MAX) for each V
#define PNN_N_IN 3
#define PNN_N_OUT 2
#define PNN_MAX_BATCH 8
#include "pnn_protocol.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static float current[PNN_N_IN];

static float weight(int i, int j) { return 0.5f * (i + 1) - 0.3f * j; }

static void drive(const float* x) {
  memcpy(current, x, sizeof current);
  fputs("drive\n", stderr);
}

static void read_inputs(float* y) {
  for (int j = 0; j < PNN_N_OUT; j++) {
    float s = 0.0f;
    for (int i = 0; i < PNN_N_IN; i++) s += current[i] * weight(i, j);
    y[j] = tanhf(s);
  }
}

static void safe() {
  memset(current, 0, sizeof current);
  fputs("safe\n", stderr);
}

static void send_bytes(const uint8_t* data, size_t n) {
  size_t off = 0;
  while (off < n) {
    ssize_t k = write(1, data + off, n - off);
    if (k < 0) _exit(1);
    off += (size_t)k;
  }
}

int main(int argc, char** argv) {
  if (argc >= 4 && strcmp(argv[1], "dac") == 0) {
    float full = strtof(argv[2], 0);
    uint32_t max_code = (uint32_t)strtoul(argv[3], 0, 10);
    for (int i = 4; i < argc; i++) {
      printf("%lu\n", (unsigned long)pnn::dac_code(strtof(argv[i], 0), full, max_code));
    }
    return 0;
  }
  float lo = argc >= 3 ? strtof(argv[1], 0) : 0.0f;
  float hi = argc >= 3 ? strtof(argv[2], 0) : 1.0f;
  setvbuf(stderr, 0, _IONBF, 0);
  pnn::Device device({drive, read_inputs, safe, send_bytes}, lo, hi, "pnn firmware host");
  uint8_t buf[512];
  for (;;) {
    ssize_t n = read(0, buf, sizeof buf);
    if (n <= 0) return 0;
    for (ssize_t i = 0; i < n; i++) device.feed(buf[i]);
  }
}
