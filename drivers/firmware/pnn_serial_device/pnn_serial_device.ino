// pnn serial device: minimal example firmware for an Arduino-style board with DACs and ADCs.
//
// It speaks pnn's framed serial protocol (drivers/serial.py; device side in pnn_protocol.h) so
// that pnn.drivers.SerialLayer can train the physical system wired between the board's outputs
// and inputs. Adapt the three functions marked ADAPT to your board, set the shape below to match
// your wiring, and use a profile whose [serial] baudrate matches BAUD. See README.md here.
#define PNN_N_IN 2        // drive channels (DAC outputs)
#define PNN_N_OUT 2       // measured channels (ADC inputs)
#define PNN_MAX_BATCH 8   // drive vectors per MEASURE frame (RAM: ~2 frames of buffers)
#include "pnn_protocol.h"

const long BAUD = 115200;
constexpr float LO = 0.0f;  // drive range, in the units SerialLayer sends ([serial] scale/offset)
constexpr float HI = 1.0f;  // never above what the hardware tolerates: values outside are refused
const uint32_t DAC_MAX = 4095;  // ADAPT: the DACs' largest code (12 bits); HI drives it
// a DAC produces 0 (code 0) to HI (code DAC_MAX): a range outside that does not compile
static_assert(LO >= 0.0f && HI > LO, "the drive range must satisfy 0 <= LO < HI");
const int DAC_PINS[PNN_N_IN] = {A0, A1};   // ADAPT: e.g. the two DACs of an Arduino Due
const int ADC_PINS[PNN_N_OUT] = {A2, A3};
const unsigned SETTLE_US = 100;            // ADAPT: the system's settling time after a drive

// ADAPT: one drive vector, each value in [LO, HI] (checked before this is called)
void driveOutputs(const float* x) {
  for (int i = 0; i < PNN_N_IN; i++) analogWrite(DAC_PINS[i], pnn::dac_code(x[i], HI, DAC_MAX));
  delayMicroseconds(SETTLE_US);
}

// ADAPT: one measurement vector
void readInputs(float* y) {
  for (int j = 0; j < PNN_N_OUT; j++) y[j] = analogRead(ADC_PINS[j]) / 4095.0f;
}

// ADAPT: every output to its safe state (zero)
void safeOutputs() {
  for (int i = 0; i < PNN_N_IN; i++) analogWrite(DAC_PINS[i], 0);
}

void sendBytes(const uint8_t* data, size_t n) { Serial.write(data, n); }

pnn::Device device({driveOutputs, readInputs, safeOutputs, sendBytes}, LO, HI, "pnn example device");

void setup() {
  analogWriteResolution(12);  // Due / Zero / Teensy; remove on boards without it
  analogReadResolution(12);
  safeOutputs();
  Serial.begin(BAUD);
}

void loop() {
  while (Serial.available() > 0) device.feed((uint8_t)Serial.read());
}
