// packet.h — a small frame builder for BPF tests and benchmarks:
//   Packet().eth(kClientMac, kNodeMac).ipv4("10.0.1.10", "10.0.0.100").tcp(40000, 80).payload("hi")
// build() fills in lengths and valid checksums (computed from scratch). The knobs after the
// layers make deliberately broken variants (bad IHL, short total length, fragments, ...), and
// every knob is applied before checksums so only the named field is wrong.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace meshpath::testing {

using Bytes = std::vector<uint8_t>;
using Mac = std::array<uint8_t, 6>;

Mac parseMac(const std::string& text);  // "02:00:00:00:01:10"

inline constexpr uint8_t kTcpFin = 0x01;
inline constexpr uint8_t kTcpSyn = 0x02;
inline constexpr uint8_t kTcpRst = 0x04;
inline constexpr uint8_t kTcpPsh = 0x08;
inline constexpr uint8_t kTcpAck = 0x10;

class Packet {
 public:
  Packet& eth(const std::string& src, const std::string& dst);
  Packet& etherType(uint16_t type);  // raw EtherType (ARP...), with payload() as the rest
  Packet& vlan(uint16_t vid);
  Packet& ipv4(const std::string& src, const std::string& dst);
  Packet& ipv6(const std::string& src, const std::string& dst);
  Packet& tcp(uint16_t sport, uint16_t dport, uint8_t flags = kTcpSyn, uint32_t seq = 1000,
              uint32_t ack = 0);
  // TCP options after the fixed header (NOP-padded to 4 bytes; the data offset follows), and
  // the window field (8192 unless set).
  Packet& tcpOptions(const Bytes& options);
  Packet& tcpWindow(uint16_t window);
  Packet& udp(uint16_t sport, uint16_t dport);
  // ICMP (IPv4) or ICMPv6 (IPv6): type, code, the 4 bytes after the checksum (the next-hop MTU
  // of "fragmentation needed", the MTU of "packet too big"), then payload() as the quote.
  Packet& icmp(uint8_t type, uint8_t code, uint32_t rest = 0);
  Packet& payload(const std::string& data);
  Packet& payload(const Bytes& data);

  // Broken variants and unusual shapes.
  Packet& ipv4Options(const Bytes& options);  // after the fixed header, zero-padded to 4 bytes
  Packet& ipv4Ihl(uint8_t ihl);               // IHL field as given, whatever the header's size
  Packet& ipv4TotLen(uint16_t totLen);
  Packet& ipv4Frag(bool moreFragments, uint16_t offsetUnits);
  Packet& ipv4Protocol(uint8_t proto);
  Packet& ipv6PayloadLen(uint16_t len);
  Packet& ipv6Ext(uint8_t type, uint8_t hdrLenUnits = 0);  // appended to the chain, in order
  Packet& tcpDoff(uint8_t doff);
  Packet& udpLen(uint16_t len);
  Packet& udpNoChecksum();            // IPv4 UDP checksum 0 ("none")
  Packet& l4Keep(size_t bytes);       // keep only the first bytes of L4; IP lengths agree
  Packet& truncate(size_t frameLen);  // cut the finished frame (lengths disagree)

  Bytes build() const;

 private:
  Mac ethSrc_{}, ethDst_{};
  std::optional<uint16_t> etherType_;
  std::optional<uint16_t> vlan_;
  int family_ = 0;  // 4, 6 or 0 (no IP)
  std::array<uint8_t, 16> ipSrc_{}, ipDst_{};
  uint8_t l4Proto_ = 0;  // 6, 17, 1 (ICMP or ICMPv6 by family) or 0
  uint16_t sport_ = 0, dport_ = 0;
  uint8_t tcpFlags_ = 0;
  uint8_t icmpType_ = 0, icmpCode_ = 0;
  uint32_t icmpRest_ = 0;
  uint32_t seq_ = 0, ack_ = 0;
  Bytes payload_;
  Bytes ipv4Options_;
  std::optional<uint8_t> ipv4Ihl_;
  std::optional<uint16_t> ipv4TotLen_;
  uint16_t ipv4FragOff_ = 0;
  std::optional<uint8_t> ipv4Protocol_;
  std::optional<uint16_t> ipv6PayloadLen_;
  std::vector<std::pair<uint8_t, uint8_t>> ipv6Ext_;  // (type, hdr len in 8-byte units - 1)
  std::optional<uint8_t> tcpDoff_;
  Bytes tcpOptions_;
  uint16_t tcpWindow_ = 8192;
  std::optional<uint16_t> udpLen_;
  bool udpNoChecksum_ = false;
  std::optional<size_t> l4Keep_;
  std::optional<size_t> truncate_;
};

// How a frame looks apart from its MACs, addresses and ports: the tables of tests and benches
// describe a flow's packets by one Shape and vary only those.
struct Shape {
  uint8_t proto = 6;  // IPPROTO_TCP or IPPROTO_UDP
  uint8_t tcpFlags = kTcpSyn;
  std::string payload{};
  std::optional<uint16_t> vlan{};
  Bytes ipv4Options{};
  std::vector<uint8_t> ipv6Ext{};  // extension header types, 16 bytes each (fragment: 8)
  bool udpNoChecksum = false;
};

// The frame of shape s between the given MACs and addresses (IPv6 when src has a ':').
Bytes frame(const Shape& s, const std::string& srcMac, const std::string& dstMac,
            const std::string& src, const std::string& dst, uint16_t sport, uint16_t dport);

// One's complement sum folded and inverted, over data, starting from initial.
uint16_t internetChecksum(const uint8_t* data, size_t len, uint32_t initial = 0);

// Recomputes from scratch the IPv4 header and TCP/UDP checksums of frame; "" when all are
// valid, otherwise what is wrong. An IPv4 UDP checksum of 0 counts as valid.
std::string verifyChecksums(const Bytes& frame);

// The name of the header field at offset in frame ("eth.dst", "ipv4.check", "tcp.sport",
// "payload", ...), for mismatch reports.
std::string fieldAt(const Bytes& frame, size_t offset);

// Offset-labelled hex dump, 16 bytes a line.
std::string hexDump(const Bytes& frame);

// "" when equal, else the first differing field and both hex dumps.
std::string describeMismatch(const Bytes& expected, const Bytes& actual);

}  // namespace meshpath::testing
