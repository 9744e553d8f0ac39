#include "packet.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstdio>
#include <stdexcept>
#include <tuple>

namespace meshpath::testing {
namespace {

constexpr uint16_t kEthIp = 0x0800;
constexpr uint16_t kEthIpv6 = 0x86dd;
constexpr uint16_t kEthVlan = 0x8100;
constexpr uint8_t kProtoTcp = 6;
constexpr uint8_t kProtoUdp = 17;
constexpr uint8_t kProtoIcmp = 1;
constexpr uint8_t kProtoIcmpv6 = 58;

void put16(Bytes& b, size_t off, uint16_t v) {
  b[off] = static_cast<uint8_t>(v >> 8);
  b[off + 1] = static_cast<uint8_t>(v);
}
void put32(Bytes& b, size_t off, uint32_t v) {
  put16(b, off, static_cast<uint16_t>(v >> 16));
  put16(b, off + 2, static_cast<uint16_t>(v));
}
uint16_t get16(const Bytes& b, size_t off) {
  return static_cast<uint16_t>(b[off] << 8 | b[off + 1]);
}
void append(Bytes& b, const uint8_t* p, size_t n) { b.insert(b.end(), p, p + n); }

uint32_t sum16(const uint8_t* data, size_t len, uint32_t sum) {
  for (size_t i = 0; i + 1 < len; i += 2) sum += static_cast<uint32_t>(data[i] << 8 | data[i + 1]);
  if (len % 2) sum += static_cast<uint32_t>(data[len - 1] << 8);
  return sum;
}

// Pseudo-header sum for the L4 checksum.
uint32_t pseudoSum(int family, const uint8_t* src, const uint8_t* dst, uint8_t proto,
                   size_t l4len) {
  const size_t alen = family == 4 ? 4 : 16;
  uint32_t sum = sum16(src, alen, 0);
  sum = sum16(dst, alen, sum);
  sum += proto;
  sum += static_cast<uint32_t>(l4len & 0xffff) + static_cast<uint32_t>(l4len >> 16);
  return sum;
}

struct Field {
  size_t start, len;
  std::string name;
};

// The frame's header fields, as far as it can be parsed.
std::vector<Field> fieldLayout(const Bytes& f) {
  std::vector<Field> out;
  size_t off = 0;
  if (f.size() < 14) return out;
  out.push_back({0, 6, "eth.dst"});
  out.push_back({6, 6, "eth.src"});
  out.push_back({12, 2, "eth.type"});
  uint16_t type = get16(f, 12);
  off = 14;
  if ((type == kEthVlan || type == 0x88a8) && f.size() >= 18) {
    out.push_back({14, 2, "vlan.tci"});
    out.push_back({16, 2, "vlan.type"});
    type = get16(f, 16);
    off = 18;
  }
  uint8_t proto = 0;
  size_t l4 = 0;
  if (type == kEthIp && f.size() >= off + 20) {
    const size_t ihl = (f[off] & 0xf) * 4u;
    const std::tuple<size_t, size_t, const char*> v4[] = {
        {0, 1, "ipv4.ver_ihl"}, {1, 1, "ipv4.tos"},   {2, 2, "ipv4.tot_len"}, {4, 2, "ipv4.id"},
        {6, 2, "ipv4.frag"},    {8, 1, "ipv4.ttl"},   {9, 1, "ipv4.proto"},   {10, 2, "ipv4.check"},
        {12, 4, "ipv4.saddr"},  {16, 4, "ipv4.daddr"}};
    for (auto [s, l, n] : v4) out.push_back({off + s, l, n});
    if (ihl > 20) out.push_back({off + 20, ihl - 20, "ipv4.options"});
    proto = f[off + 9];
    l4 = off + (ihl < 20 ? 20 : ihl);
  } else if (type == kEthIpv6 && f.size() >= off + 40) {
    const std::tuple<size_t, size_t, const char*> v6[] = {
        {0, 4, "ipv6.ver_tc_flow"}, {4, 2, "ipv6.payload_len"}, {6, 1, "ipv6.nexthdr"},
        {7, 1, "ipv6.hop_limit"},   {8, 16, "ipv6.saddr"},      {24, 16, "ipv6.daddr"}};
    for (auto [s, l, n] : v6) out.push_back({off + s, l, n});
    proto = f[off + 6];
    l4 = off + 40;
    while ((proto == 0 || proto == 43 || proto == 60 || proto == 44) && f.size() >= l4 + 8) {
      const size_t len = proto == 44 ? 8 : (f[l4 + 1] + 1u) * 8;
      out.push_back({l4, len, "ipv6.ext" + std::to_string(proto)});
      proto = f[l4];
      l4 += len;
    }
  }
  if (proto == kProtoTcp && f.size() >= l4 + 20) {
    const std::tuple<size_t, size_t, const char*> t[] = {
        {0, 2, "tcp.sport"},   {2, 2, "tcp.dport"},  {4, 4, "tcp.seq"},
        {8, 4, "tcp.ack"},     {12, 1, "tcp.doff"},  {13, 1, "tcp.flags"},
        {14, 2, "tcp.window"}, {16, 2, "tcp.check"}, {18, 2, "tcp.urg"}};
    for (auto [s, l, n] : t) out.push_back({l4 + s, l, n});
    l4 += 20;
  } else if (proto == kProtoUdp && f.size() >= l4 + 8) {
    const std::tuple<size_t, size_t, const char*> u[] = {
        {0, 2, "udp.sport"}, {2, 2, "udp.dport"}, {4, 2, "udp.len"}, {6, 2, "udp.check"}};
    for (auto [s, l, n] : u) out.push_back({l4 + s, l, n});
    l4 += 8;
  }
  if (l4 > 0 && f.size() > l4) out.push_back({l4, f.size() - l4, "payload"});
  return out;
}

}  // namespace

Mac parseMac(const std::string& text) {
  Mac mac{};
  unsigned v[6];
  if (std::sscanf(text.c_str(), "%x:%x:%x:%x:%x:%x", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]) !=
      6) {
    throw std::invalid_argument("bad MAC " + text);
  }
  for (int i = 0; i < 6; ++i) mac[i] = static_cast<uint8_t>(v[i]);
  return mac;
}

Packet& Packet::eth(const std::string& src, const std::string& dst) {
  ethSrc_ = parseMac(src);
  ethDst_ = parseMac(dst);
  return *this;
}
Packet& Packet::etherType(uint16_t type) {
  etherType_ = type;
  return *this;
}
Packet& Packet::vlan(uint16_t vid) {
  vlan_ = vid;
  return *this;
}
Packet& Packet::ipv4(const std::string& src, const std::string& dst) {
  family_ = 4;
  ipSrc_ = {};
  ipDst_ = {};
  if (inet_pton(AF_INET, src.c_str(), ipSrc_.data()) != 1 ||
      inet_pton(AF_INET, dst.c_str(), ipDst_.data()) != 1) {
    throw std::invalid_argument("bad IPv4 address " + src + " / " + dst);
  }
  return *this;
}
Packet& Packet::ipv6(const std::string& src, const std::string& dst) {
  family_ = 6;
  if (inet_pton(AF_INET6, src.c_str(), ipSrc_.data()) != 1 ||
      inet_pton(AF_INET6, dst.c_str(), ipDst_.data()) != 1) {
    throw std::invalid_argument("bad IPv6 address " + src + " / " + dst);
  }
  return *this;
}
Packet& Packet::tcp(uint16_t sport, uint16_t dport, uint8_t flags, uint32_t seq, uint32_t ack) {
  l4Proto_ = kProtoTcp;
  sport_ = sport;
  dport_ = dport;
  tcpFlags_ = flags;
  seq_ = seq;
  ack_ = ack;
  return *this;
}
Packet& Packet::udp(uint16_t sport, uint16_t dport) {
  l4Proto_ = kProtoUdp;
  sport_ = sport;
  dport_ = dport;
  return *this;
}
Packet& Packet::icmp(uint8_t type, uint8_t code, uint32_t rest) {
  l4Proto_ = kProtoIcmp;
  icmpType_ = type;
  icmpCode_ = code;
  icmpRest_ = rest;
  return *this;
}
Packet& Packet::payload(const std::string& data) {
  payload_.assign(data.begin(), data.end());
  return *this;
}
Packet& Packet::payload(const Bytes& data) {
  payload_ = data;
  return *this;
}
Packet& Packet::ipv4Options(const Bytes& options) {
  ipv4Options_ = options;
  while (ipv4Options_.size() % 4) ipv4Options_.push_back(0);
  return *this;
}
Packet& Packet::ipv4Ihl(uint8_t ihl) {
  ipv4Ihl_ = ihl;
  return *this;
}
Packet& Packet::ipv4TotLen(uint16_t totLen) {
  ipv4TotLen_ = totLen;
  return *this;
}
Packet& Packet::ipv4Frag(bool moreFragments, uint16_t offsetUnits) {
  ipv4FragOff_ = static_cast<uint16_t>((moreFragments ? 0x2000 : 0) | (offsetUnits & 0x1fff));
  return *this;
}
Packet& Packet::ipv4Protocol(uint8_t proto) {
  ipv4Protocol_ = proto;
  return *this;
}
Packet& Packet::ipv6PayloadLen(uint16_t len) {
  ipv6PayloadLen_ = len;
  return *this;
}
Packet& Packet::ipv6Ext(uint8_t type, uint8_t hdrLenUnits) {
  ipv6Ext_.emplace_back(type, hdrLenUnits);
  return *this;
}
Packet& Packet::tcpDoff(uint8_t doff) {
  tcpDoff_ = doff;
  return *this;
}
Packet& Packet::udpLen(uint16_t len) {
  udpLen_ = len;
  return *this;
}
Packet& Packet::tcpOptions(const Bytes& options) {
  tcpOptions_ = options;
  while (tcpOptions_.size() % 4) tcpOptions_.push_back(1);  // NOP
  return *this;
}
Packet& Packet::tcpWindow(uint16_t window) {
  tcpWindow_ = window;
  return *this;
}
Packet& Packet::udpNoChecksum() {
  udpNoChecksum_ = true;
  return *this;
}
Packet& Packet::l4Keep(size_t bytes) {
  l4Keep_ = bytes;
  return *this;
}
Packet& Packet::truncate(size_t frameLen) {
  truncate_ = frameLen;
  return *this;
}

Bytes Packet::build() const {
  // L4 first: its length feeds the IP header.
  Bytes l4;
  if (l4Proto_ == kProtoTcp) {
    l4.assign(20, 0);
    put16(l4, 0, sport_);
    put16(l4, 2, dport_);
    put32(l4, 4, seq_);
    put32(l4, 8, ack_);
    l4[12] = static_cast<uint8_t>(
        tcpDoff_.value_or(static_cast<uint8_t>(5 + tcpOptions_.size() / 4)) << 4);
    l4[13] = tcpFlags_;
    put16(l4, 14, tcpWindow_);
    l4.insert(l4.end(), tcpOptions_.begin(), tcpOptions_.end());
  } else if (l4Proto_ == kProtoUdp) {
    l4.assign(8, 0);
    put16(l4, 0, sport_);
    put16(l4, 2, dport_);
    put16(l4, 4, udpLen_.value_or(static_cast<uint16_t>(8 + payload_.size())));
  } else if (l4Proto_ == kProtoIcmp) {
    l4.assign(8, 0);
    l4[0] = icmpType_;
    l4[1] = icmpCode_;
    put32(l4, 4, icmpRest_);
  }
  l4.insert(l4.end(), payload_.begin(), payload_.end());
  const uint8_t ipProto = l4Proto_ == kProtoIcmp && family_ == 6 ? kProtoIcmpv6 : l4Proto_;
  // ICMP's checksum covers the message only; ICMPv6's the pseudo-header too.
  if (l4Proto_ == kProtoIcmp) {
    const uint32_t pseudo = family_ == 6 ? pseudoSum(family_, ipSrc_.data(), ipDst_.data(),
                                                     kProtoIcmpv6, l4.size())
                                         : 0;
    put16(l4, 2, internetChecksum(l4.data(), l4.size(), pseudo));
  }
  if (l4Keep_ && *l4Keep_ < l4.size()) l4.resize(*l4Keep_);

  Bytes l3;
  if (family_ == 4) {
    const size_t hlen = 20 + ipv4Options_.size();
    l3.assign(20, 0);
    l3[0] = static_cast<uint8_t>(0x40 | (ipv4Ihl_.value_or(static_cast<uint8_t>(hlen / 4)) & 0xf));
    put16(l3, 2, ipv4TotLen_.value_or(static_cast<uint16_t>(hlen + l4.size())));
    put16(l3, 4, 0x1234);
    put16(l3, 6, static_cast<uint16_t>(ipv4FragOff_ ? ipv4FragOff_ : 0x4000));  // DF
    l3[8] = 64;
    l3[9] = ipv4Protocol_.value_or(ipProto);
    std::copy(ipSrc_.begin(), ipSrc_.begin() + 4, l3.begin() + 12);
    std::copy(ipDst_.begin(), ipDst_.begin() + 4, l3.begin() + 16);
    l3.insert(l3.end(), ipv4Options_.begin(), ipv4Options_.end());
    put16(l3, 10, internetChecksum(l3.data(), l3.size()));
  } else if (family_ == 6) {
    Bytes ext;
    uint8_t first = ipProto;
    for (size_t i = ipv6Ext_.size(); i-- > 0;) {
      const auto [type, units] = ipv6Ext_[i];
      Bytes h(type == 44 ? 8 : (units + 1u) * 8, 0);
      h[0] = first;
      h[1] = type == 44 ? 0 : units;
      ext.insert(ext.begin(), h.begin(), h.end());
      first = type;
    }
    l3.assign(40, 0);
    put32(l3, 0, 0x60000000);
    put16(l3, 4, ipv6PayloadLen_.value_or(static_cast<uint16_t>(ext.size() + l4.size())));
    l3[6] = first;
    l3[7] = 64;
    std::copy(ipSrc_.begin(), ipSrc_.end(), l3.begin() + 8);
    std::copy(ipDst_.begin(), ipDst_.end(), l3.begin() + 24);
    l3.insert(l3.end(), ext.begin(), ext.end());
  }

  // L4 checksum over the pseudo-header and whatever L4 bytes there are.
  const size_t checkOff = l4Proto_ == kProtoTcp ? 16 : 6;
  if (family_ != 0 && (l4Proto_ == kProtoTcp || l4Proto_ == kProtoUdp) &&
      l4.size() >= checkOff + 2 &&
      !(udpNoChecksum_ && l4Proto_ == kProtoUdp)) {
    const uint32_t pseudo = pseudoSum(family_, ipSrc_.data(), ipDst_.data(), l4Proto_, l4.size());
    uint16_t check = internetChecksum(l4.data(), l4.size(), pseudo);
    if (l4Proto_ == kProtoUdp && check == 0) check = 0xffff;
    put16(l4, checkOff, check);
  }

  Bytes frame;
  append(frame, ethDst_.data(), 6);
  append(frame, ethSrc_.data(), 6);
  const uint16_t l3Type = etherType_ ? *etherType_
                                     : (family_ == 4   ? kEthIp
                                        : family_ == 6 ? kEthIpv6
                                                       : 0);
  frame.resize(14);
  if (vlan_) {
    put16(frame, 12, kEthVlan);
    frame.resize(18);
    put16(frame, 14, *vlan_);
    put16(frame, 16, l3Type);
  } else {
    put16(frame, 12, l3Type);
  }
  frame.insert(frame.end(), l3.begin(), l3.end());
  frame.insert(frame.end(), l4.begin(), l4.end());
  if (family_ == 0 && l4Proto_ == 0) frame.insert(frame.end(), payload_.begin(), payload_.end());
  if (truncate_ && *truncate_ < frame.size()) frame.resize(*truncate_);
  return frame;
}

Bytes frame(const Shape& s, const std::string& srcMac, const std::string& dstMac,
            const std::string& src, const std::string& dst, uint16_t sport, uint16_t dport) {
  Packet p;
  p.eth(srcMac, dstMac);
  if (s.vlan) p.vlan(*s.vlan);
  if (src.find(':') != std::string::npos) {
    p.ipv6(src, dst);
  } else {
    p.ipv4(src, dst);
  }
  if (!s.ipv4Options.empty()) p.ipv4Options(s.ipv4Options);
  for (uint8_t type : s.ipv6Ext) p.ipv6Ext(type, 1);
  if (s.proto == kProtoTcp) {
    p.tcp(sport, dport, s.tcpFlags);
  } else {
    p.udp(sport, dport);
  }
  if (s.udpNoChecksum) p.udpNoChecksum();
  p.payload(s.payload);
  return p.build();
}

uint16_t internetChecksum(const uint8_t* data, size_t len, uint32_t initial) {
  uint32_t sum = sum16(data, len, initial);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

std::string verifyChecksums(const Bytes& f) {
  if (f.size() < 14) return "frame shorter than Ethernet";
  size_t off = 14;
  uint16_t type = get16(f, 12);
  if (type == kEthVlan || type == 0x88a8) {
    type = get16(f, 16);
    off = 18;
  }
  int family;
  uint8_t proto;
  size_t l4, end;
  if (type == kEthIp) {
    if (f.size() < off + 20) return "truncated IPv4 header";
    const size_t ihl = (f[off] & 0xf) * 4u;
    if (internetChecksum(&f[off], ihl) != 0) return "bad IPv4 header checksum";
    family = 4;
    proto = f[off + 9];
    l4 = off + ihl;
    end = off + get16(f, off + 2);
  } else if (type == kEthIpv6) {
    if (f.size() < off + 40) return "truncated IPv6 header";
    family = 6;
    proto = f[off + 6];
    l4 = off + 40;
    end = l4 + get16(f, off + 4);
    while (proto == 0 || proto == 43 || proto == 60) {
      proto = f[l4];
      l4 += (f[l4 + 1] + 1u) * 8;
    }
  } else {
    return "";
  }
  if (end > f.size() || l4 > end) return "IP length beyond frame";
  const size_t srcOff = family == 4 ? off + 12 : off + 8;
  const size_t dstOff = family == 4 ? off + 16 : off + 24;
  if (proto == kProtoUdp && family == 4 && get16(f, l4 + 6) == 0) return "";
  if (proto != kProtoTcp && proto != kProtoUdp) return "";
  const uint32_t pseudo = pseudoSum(family, &f[srcOff], &f[dstOff], proto, end - l4);
  if (internetChecksum(&f[l4], end - l4, pseudo) != 0) {
    return proto == kProtoTcp ? "bad TCP checksum" : "bad UDP checksum";
  }
  return "";
}

std::string fieldAt(const Bytes& frame, size_t offset) {
  for (const Field& field : fieldLayout(frame)) {
    if (offset >= field.start && offset < field.start + field.len) return field.name;
  }
  return "byte " + std::to_string(offset);
}

std::string hexDump(const Bytes& frame) {
  std::string out;
  char buf[24];
  for (size_t i = 0; i < frame.size(); ++i) {
    if (i % 16 == 0) {
      std::snprintf(buf, sizeof(buf), "%04zx:", i);
      out += (i ? "\n" : "") + std::string(buf);
    }
    std::snprintf(buf, sizeof(buf), " %02x", frame[i]);
    out += buf;
  }
  return out;
}

std::string describeMismatch(const Bytes& expected, const Bytes& actual) {
  if (expected == actual) return "";
  std::string what;
  const size_t common = std::min(expected.size(), actual.size());
  size_t i = 0;
  while (i < common && expected[i] == actual[i]) ++i;
  if (i < common) {
    what = "first difference at offset " + std::to_string(i) + " (" + fieldAt(expected, i) + ")";
  } else {
    what = "length differs: expected " + std::to_string(expected.size()) + ", got " +
           std::to_string(actual.size());
  }
  return what + "\nexpected:\n" + hexDump(expected) + "\nactual:\n" + hexDump(actual);
}

}  // namespace meshpath::testing
