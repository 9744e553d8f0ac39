// malformed_cases.h — one table of malformed and not-ours frames, each sent to a VIP's port so
// that accepting it would balance it, with the mp_exc_reason the parser must name. It drives
// both the BPF program (verdict + counter) and the native build of parse.h (same reason).
// The TCP frames carry flags: a SYN by default; a plain ACK makes them packets the flow cache
// would serve, were they parsed as their 5-tuple's (TCP 40000 -> 80, UDP 5000 -> 53).
#pragma once

#include <string>
#include <vector>

#include "abi.h"
#include "lb_harness.h"
#include "packet.h"

namespace meshpath::testing {

struct MalformedCase {
  std::string description;
  Bytes frame;
  uint32_t reason;  // enum mp_exc_reason
};

inline std::vector<MalformedCase> malformedCases(uint8_t flags = kTcpSyn) {
  using namespace topo;
  const auto v4 = [] { return Packet().eth(kClientMac, kClientIfMac).ipv4(kClient4, kVip4); };
  const auto v6 = [] { return Packet().eth(kClientMac, kClientIfMac).ipv6(kClient6, kVip6); };
  const Bytes arpBody(28, 0x11);
  return {
      {"frame shorter than Ethernet", v4().tcp(40000, 80, flags).truncate(10).build(),
       MP_EXC_DROP_ETH_TRUNC},
      {"frame cut inside the VLAN tag", v4().vlan(7).tcp(40000, 80, flags).truncate(16).build(),
       MP_EXC_DROP_ETH_TRUNC},
      {"ARP is not ours",
       Packet().eth(kClientMac, kClientIfMac).etherType(0x0806).payload(arpBody).build(),
       MP_EXC_PASS_NON_IP},
      {"IPv4 EtherType carrying version 6", v6().etherType(0x0800).tcp(40000, 80, flags).build(),
       MP_EXC_PASS_NON_IP},
      {"IPv4 header cut short", v4().tcp(40000, 80, flags).truncate(14 + 10).build(),
       MP_EXC_DROP_IP4_TRUNC},
      {"IPv4 IHL (options) beyond the frame",
       v4().ipv4Ihl(15).udp(5000, 53).payload("abcd").build(), MP_EXC_DROP_IP4_TRUNC},
      {"IPv4 IHL below 5", v4().ipv4Ihl(4).tcp(40000, 80, flags).build(), MP_EXC_DROP_IP4_BAD_IHL},
      {"IPv4 total length 0", v4().ipv4TotLen(0).tcp(40000, 80, flags).build(),
       MP_EXC_DROP_IP4_BAD_LEN},
      {"IPv4 total length below IHL", v4().ipv4TotLen(19).tcp(40000, 80, flags).build(),
       MP_EXC_DROP_IP4_BAD_LEN},
      {"IPv4 total length beyond the frame", v4().ipv4TotLen(1000).tcp(40000, 80, flags).build(),
       MP_EXC_DROP_IP4_BAD_LEN},
      {"IPv4 first fragment (MF)", v4().ipv4Frag(true, 0).tcp(40000, 80, flags).build(),
       MP_EXC_PASS_IP4_FRAG},
      {"IPv4 later fragment (offset)", v4().ipv4Frag(false, 100).tcp(40000, 80, flags).build(),
       MP_EXC_PASS_IP4_FRAG},
      {"IPv6 header cut short", v6().tcp(40000, 80, flags).truncate(14 + 30).build(),
       MP_EXC_DROP_IP6_TRUNC},
      {"IPv6 payload length 0", v6().ipv6PayloadLen(0).tcp(40000, 80, flags).build(),
       MP_EXC_DROP_IP6_BAD_LEN},
      {"IPv6 payload length beyond the frame",
       v6().ipv6PayloadLen(500).tcp(40000, 80, flags).build(), MP_EXC_DROP_IP6_BAD_LEN},
      {"IPv6 fragment header", v6().ipv6Ext(44).tcp(40000, 80, flags).build(),
       MP_EXC_PASS_IP6_FRAG},
      {"IPv6 fragment header after options",
       v6().ipv6Ext(0).ipv6Ext(44).tcp(40000, 80, flags).build(), MP_EXC_PASS_IP6_FRAG},
      {"IPv6 more than MP_IPV6_EXT_MAX extension headers",
       v6().ipv6Ext(0).ipv6Ext(60).ipv6Ext(43).ipv6Ext(60).ipv6Ext(60).tcp(40000, 80, flags)
           .build(),
       MP_EXC_PASS_IP6_EXT_LIMIT},
      {"IPv6 extension header beyond the payload",
       v6().ipv6Ext(60, 3).tcp(40000, 80, flags).ipv6PayloadLen(16).build(), MP_EXC_DROP_IP6_TRUNC},
      {"IPv4 TCP header cut short", v4().tcp(40000, 80, flags).l4Keep(10).build(),
       MP_EXC_DROP_L4_TRUNC},
      {"IPv6 TCP header cut short", v6().tcp(40000, 80, flags).l4Keep(19).build(),
       MP_EXC_DROP_L4_TRUNC},
      {"IPv4 TCP data offset below 5", v4().tcp(40000, 80, flags).tcpDoff(4).build(),
       MP_EXC_DROP_L4_BAD_LEN},
      {"IPv6 TCP data offset beyond the packet", v6().tcp(40000, 80, flags).tcpDoff(15).build(),
       MP_EXC_DROP_L4_BAD_LEN},
      {"IPv4 UDP header cut short", v4().udp(5000, 53).l4Keep(6).build(), MP_EXC_DROP_L4_TRUNC},
      {"IPv6 UDP header cut short", v6().udp(5000, 53).l4Keep(7).build(), MP_EXC_DROP_L4_TRUNC},
      {"IPv4 UDP length below 8", v4().udp(5000, 53).udpLen(4).payload("abcd").build(),
       MP_EXC_DROP_L4_BAD_LEN},
      {"IPv4 UDP length beyond the IP payload",
       v4().udp(5000, 53).udpLen(200).payload("abcd").build(), MP_EXC_DROP_L4_BAD_LEN},
      {"IPv6 UDP length beyond the IP payload",
       v6().udp(5000, 53).udpLen(13).payload("abcd").build(), MP_EXC_DROP_L4_BAD_LEN},
  };
}

}  // namespace meshpath::testing
