// pktgen_skel.h — the generated skeleton of pktgen.bpf.c with the types its globals use.
#pragma once

extern "C" {
#include "pg_abi.h"
#include "pg_frame.h"
}

#include "mp_pktgen.skel.h"
