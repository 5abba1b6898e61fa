// pnn serial protocol, version 1: the device side, in plain C++ (no Arduino dependency).
//
// The protocol is specified in drivers/serial.py (the host side, SerialLayer). Every message, both
// ways, is one frame:
//
//   START 0xA5 | TYPE | SEQ | LEN (u16, little-endian) | PAYLOAD (LEN bytes) | CRC (u16, big-endian)
//
// CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final XOR) over TYPE, SEQ, LEN
// and PAYLOAD; check value: crc16("123456789") = 0x29B1. Numbers are little-endian, drives and
// measurements float32 (this file assumes a little-endian MCU with IEEE 754 floats: AVR, ARM
// Cortex-M, ESP32, RP2040 all are).
//
//   request           payload                                reply        payload
//   HELLO    0x01     u32 session id                         HELLO_OK 0x81  u16 n_in, u16 n_out,
//                                                                           u16 max_batch, f32 lo,
//                                                                           f32 hi, ASCII id <= 64
//   MEASURE  0x10     u16 batch, batch x n_in f32            MEASURE_OK 0x90 u16 batch,
//                                                                            batch x n_out f32
//   SAFE     0x11     (empty): outputs to zero               SAFE_OK 0x91   (empty)
//   (any)                                                    ERROR 0xEE     i16 code, ASCII <= 200
//
// Receiving mirrors the host's pop_frame(): scan to a START byte, refuse an implausible TYPE/LEN by
// skipping one byte, wait for the whole frame, check the CRC; on a mismatch skip one byte and scan
// again. Idempotent retries: the device remembers its last MEASURE/SAFE request (TYPE, SEQ, LEN and
// CRC, which covers the payload) with its reply, and answers a repeat of it from memory without
// driving the outputs again; HELLO with a new session id forgets it. The host repeats the same
// bytes on a retry and uses the next SEQ for every new request, so a lost reply costs a resend,
// never a second measurement.
//
// Safety: a MEASURE whose drives are not all finite and inside [lo, hi] is refused with ERROR -3
// before anything is driven (written so that a NaN lo or hi refuses every drive). dac_code() maps
// a drive to a code that always lies in [0, max_code], for the board glue.
//
// Configure with macros before including (defaults in brackets): PNN_N_IN [4], PNN_N_OUT [4],
// PNN_MAX_BATCH [8] (RAM: the receive and reply buffers each hold one full frame).
#ifndef PNN_PROTOCOL_H
#define PNN_PROTOCOL_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifndef PNN_N_IN
#define PNN_N_IN 4
#endif
#ifndef PNN_N_OUT
#define PNN_N_OUT 4
#endif
#ifndef PNN_MAX_BATCH
#define PNN_MAX_BATCH 8
#endif

namespace pnn {

const uint8_t START = 0xA5;
const uint8_t HELLO = 0x01;
const uint8_t MEASURE = 0x10;
const uint8_t SAFE = 0x11;
const uint8_t HELLO_OK = 0x81;
const uint8_t MEASURE_OK = 0x90;
const uint8_t SAFE_OK = 0x91;
const uint8_t ERROR = 0xEE;
const size_t HEAD = 5;            // START, TYPE, SEQ, LEN
const size_t MAX_ERROR_TEXT = 200;
const size_t MAX_ID_TEXT = 64;
const uint16_t CRC_INIT = 0xFFFF;
const uint16_t CRC_POLY = 0x1021;

// error codes (the same as pnn's serial emulator)
const int16_t E_PAYLOAD = -1;     // MEASURE payload does not hold batch x n_in float32
const int16_t E_BATCH = -2;       // batch > max_batch
const int16_t E_RANGE = -3;       // a drive outside [lo, hi] or not finite: nothing driven

const size_t MAX_MEASURE_IN = 2 + 4 * PNN_MAX_BATCH * PNN_N_IN;
const size_t MAX_MEASURE_OUT = 2 + 4 * PNN_MAX_BATCH * PNN_N_OUT;
const size_t MAX_PAYLOAD_OUT = MAX_MEASURE_OUT > 2 + MAX_ERROR_TEXT ? MAX_MEASURE_OUT
                                                                    : 2 + MAX_ERROR_TEXT;
const size_t RX_SIZE = HEAD + MAX_MEASURE_IN + 2;
const size_t TX_SIZE = HEAD + MAX_PAYLOAD_OUT + 2;

inline uint16_t crc16(const uint8_t* data, size_t n, uint16_t crc = CRC_INIT) {
  for (size_t i = 0; i < n; i++) {
    crc ^= (uint16_t)data[i] << 8;
    for (int b = 0; b < 8; b++) crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ CRC_POLY) : (uint16_t)(crc << 1);
  }
  return crc;
}

// The code of drive v on a unipolar DAC whose full scale (code max_code, e.g. 4095 for 12 bits) is
// the drive full_scale: round(v / full_scale * max_code), always within [0, max_code]. The range
// check has refused every drive outside [lo, hi] already; the limits here keep a misconfigured
// range (lo below 0, hi above the DAC's full scale, a NaN) from ever writing a code the DAC cannot
// take: a value not above 0 (NaN included) or a full_scale not above 0 gives 0, a value at or
// above full_scale gives max_code.
inline uint32_t dac_code(float v, float full_scale, uint32_t max_code) {
  if (!(full_scale > 0.0f) || !(v > 0.0f)) return 0;
  if (!(v < full_scale)) return max_code;
  float c = v / full_scale * (float)max_code + 0.5f;
  if (!(c < (float)max_code)) return max_code;
  return (uint32_t)c;
}

// What the board does: set the outputs to one drive vector and read one measurement vector,
// drive everything to zero, and send bytes to the host.
struct Hardware {
  void (*drive)(const float* x);   // PNN_N_IN values, each already checked to lie in [lo, hi]
  void (*read)(float* y);          // PNN_N_OUT values
  void (*safe)();                  // all outputs to zero
  void (*write)(const uint8_t* data, size_t n);
};

class Device {
 public:
  Device(Hardware hw, float lo, float hi, const char* id) : hw_(hw), lo_(lo), hi_(hi), id_(id) {}

  // Feed every received byte here (from the serial port's receive loop).
  void feed(uint8_t byte) {
    if (rx_len_ == RX_SIZE) skip(1);  // cannot happen with plausible frames; stay bounded
    rx_[rx_len_++] = byte;
    scan();
  }

 private:
  Hardware hw_;
  float lo_, hi_;
  const char* id_;
  uint8_t rx_[RX_SIZE];
  size_t rx_len_ = 0;
  uint8_t tx_[TX_SIZE];       // MEASURE/SAFE replies: kept as the memory of the last request
  size_t tx_len_ = 0;
  uint8_t aux_[HEAD + 2 + MAX_ERROR_TEXT + 2];  // HELLO and ERROR replies: never clobber tx_
  uint32_t session_ = 0;
  bool have_session_ = false;
  // the last MEASURE/SAFE request answered, and its reply (tx_)
  bool memo_ = false;
  uint8_t memo_type_ = 0, memo_seq_ = 0;
  uint16_t memo_len_ = 0, memo_crc_ = 0;

  void skip(size_t n) {
    memmove(rx_, rx_ + n, rx_len_ - n);
    rx_len_ -= n;
  }

  bool plausible(uint8_t type, uint16_t len) const {
    if (type == HELLO) return len == 4;
    if (type == SAFE) return len == 0;
    if (type == MEASURE) return len >= 2 && len <= MAX_MEASURE_IN;
    return false;
  }

  void scan() {
    for (;;) {
      size_t i = 0;
      while (i < rx_len_ && rx_[i] != START) i++;
      if (i) skip(i);
      if (rx_len_ < HEAD) return;
      uint8_t type = rx_[1];
      uint16_t len = (uint16_t)(rx_[3] | (rx_[4] << 8));
      if (!plausible(type, len)) { skip(1); continue; }
      size_t total = HEAD + len + 2;
      if (rx_len_ < total) return;  // wait for the rest
      uint16_t crc = (uint16_t)((rx_[HEAD + len] << 8) | rx_[HEAD + len + 1]);
      if (crc != crc16(rx_ + 1, HEAD - 1 + len)) { skip(1); continue; }
      dispatch(type, rx_[2], rx_ + HEAD, len, crc);
      skip(total);
    }
  }

  // Build a frame in buf (payload already at buf + HEAD, or copied there) and send it.
  size_t send(uint8_t* buf, uint8_t type, uint8_t seq, const uint8_t* payload, size_t n) {
    buf[0] = START;
    buf[1] = type;
    buf[2] = seq;
    buf[3] = (uint8_t)(n & 0xFF);
    buf[4] = (uint8_t)(n >> 8);
    if (payload != buf + HEAD && n) memcpy(buf + HEAD, payload, n);
    uint16_t crc = crc16(buf + 1, HEAD - 1 + n);
    buf[HEAD + n] = (uint8_t)(crc >> 8);
    buf[HEAD + n + 1] = (uint8_t)(crc & 0xFF);
    hw_.write(buf, HEAD + n + 2);
    return HEAD + n + 2;
  }

  void error(uint8_t seq, int16_t code, const char* text) {
    uint8_t p[2 + MAX_ERROR_TEXT];
    memcpy(p, &code, 2);
    size_t n = strlen(text);
    if (n > MAX_ERROR_TEXT) n = MAX_ERROR_TEXT;
    memcpy(p + 2, text, n);
    send(aux_, ERROR, seq, p, 2 + n);
  }

  void dispatch(uint8_t type, uint8_t seq, const uint8_t* p, uint16_t len, uint16_t crc) {
    if (type == HELLO) {
      uint32_t session;
      memcpy(&session, p, 4);
      if (!have_session_ || session != session_) memo_ = false;  // a new host session
      session_ = session;
      have_session_ = true;
      uint8_t out[14 + MAX_ID_TEXT];
      uint16_t shape[3] = {PNN_N_IN, PNN_N_OUT, PNN_MAX_BATCH};
      memcpy(out, shape, 6);
      memcpy(out + 6, &lo_, 4);
      memcpy(out + 10, &hi_, 4);
      size_t n = strlen(id_);
      if (n > MAX_ID_TEXT) n = MAX_ID_TEXT;
      memcpy(out + 14, id_, n);
      send(aux_, HELLO_OK, seq, out, 14 + n);
      return;
    }
    if (memo_ && type == memo_type_ && seq == memo_seq_ && len == memo_len_ && crc == memo_crc_) {
      hw_.write(tx_, tx_len_);  // a resend: answer from memory, drive nothing
      return;
    }
    memo_ = false;
    if (type == SAFE) {
      hw_.safe();
      tx_len_ = send(tx_, SAFE_OK, seq, 0, 0);
    } else if (!measure(seq, p, len)) {
      return;  // an error reply: not remembered, a resend is checked afresh
    }
    memo_ = true;
    memo_type_ = type;
    memo_seq_ = seq;
    memo_len_ = len;
    memo_crc_ = crc;
  }

  bool measure(uint8_t seq, const uint8_t* p, uint16_t len) {
    uint16_t batch;
    memcpy(&batch, p, 2);
    if (batch == 0 || len != 2 + 4u * batch * PNN_N_IN) {
      error(seq, E_PAYLOAD, "MEASURE payload does not hold batch x n_in float32");
      return false;
    }
    if (batch > PNN_MAX_BATCH) {
      error(seq, E_BATCH, "batch > max_batch");
      return false;
    }
    for (size_t i = 0; i < (size_t)batch * PNN_N_IN; i++) {  // check all before driving any
      float v;
      memcpy(&v, p + 2 + 4 * i, 4);
      if (!(isfinite(v) && v >= lo_ && v <= hi_)) {  // false for a NaN bound as well
        error(seq, E_RANGE, "drive outside [lo, hi]");
        return false;
      }
    }
    uint8_t* out = tx_ + HEAD;  // the reply is built in place
    memcpy(out, &batch, 2);
    for (uint16_t s = 0; s < batch; s++) {
      float x[PNN_N_IN], y[PNN_N_OUT];
      memcpy(x, p + 2 + 4 * s * PNN_N_IN, sizeof x);
      hw_.drive(x);
      hw_.read(y);
      memcpy(out + 2 + 4 * s * PNN_N_OUT, y, sizeof y);
    }
    hw_.safe();  // outputs are on only while a batch is measured
    tx_len_ = send(tx_, MEASURE_OK, seq, out, 2 + 4u * batch * PNN_N_OUT);
    return true;
  }
};

}  // namespace pnn

#endif  // PNN_PROTOCOL_H
