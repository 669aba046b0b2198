; One lanes x lanes tile on the tiny config: Y = requant(X @ W) written to mem4.
;   mem0[0..15]  weight rows W[i, :]      mem1[0..15]  activations X[t, :]
;   mem4[0..15]  int8 results             requant: m = M, shift = SH (set by the test)
; Floorplan: mxm0=0 sxm0=1 mem0=2 mem1=3 mem2=4 mem3=5 vxm0=6 mem4=7 ...
.equ M, 3
.equ SH, 9
.queue mem0
        READ  w0, 0, n=16           ; cycle 0: rows reach mxm0 (2 slices west) at 2+2 = 4
        HALT
.queue mem1
        NOP   15
        READ  w1, 0, n=16           ; cycle 15: x reaches mxm0 at 15+2+3 = 20
        HALT
.queue mxm0
        NOP   4
        LW    w0, 0, 0, n=16        ; cycle 4..19
        NOP   15
        MM    w1, 0, 0, n=16        ; cycle 20..35, acc[k] committed at 25+k
        NOP   4
        EMIT  e0, 0, n=16           ; cycle 25..40, planes on e0..e3 at pos 0 from 27
        HALT
.queue vxm0
        NOP   33                    ; planes reach vxm0 (6 slices east) at 27+6 = 33
        REQ   e4, e0, M, SH, n=16   ; result on e4 at pos 6 from 37, at mem4 from 38
        HALT
.queue mem4
        NOP   38
        WRITE e4, 0, n=16           ; cycle 38..53, committed 40..55
        NOP   15
        HALT                        ; cycle 54: program ends at 55
