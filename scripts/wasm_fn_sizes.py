"""Code size per function of a wasm module, or the difference between two builds of it.

    python3 scripts/wasm_fn_sizes.py NEW.wasm [OLD.wasm]

Reads the code section and the `name` section (so use the unstripped cargo output, e.g.
target/wasm32-unknown-unknown/wasm-core/kiln_wasm.wasm, which holds whichever of kiln_core and
kiln_train build.sh built last: build the one you want with build.sh's cargo line; not wasm/pkg's); with
OLD, prints both totals and the functions whose size changed most. No dependencies (twiggy is not
on this machine): how the 2026-12-03 session found what its change added to the small module.
"""
import sys



def leb(b,i):
    r=s=0
    while True:
        x=b[i]; i+=1; r|=(x&0x7f)<<s; s+=7
        if x<0x80: return r,i
def parse(path):
    b=open(path,'rb').read(); i=8; nimp=0; code=[]; names={}
    while i<len(b):
        sid=b[i]; i+=1; n,i=leb(b,i); end=i+n
        if sid==2:
            cnt,j=leb(b,i)
            for _ in range(cnt):
                l,j=leb(b,j); j+=l; l,j=leb(b,j); j+=l; k=b[j]; j+=1
                if k==0: _,j=leb(b,j); nimp+=1
                elif k==1: j+=1; f=b[j]; j+=1; _,j=leb(b,j); j = leb(b,j)[1] if f&1 else j
                elif k==2: f=b[j]; j+=1; _,j=leb(b,j); j = leb(b,j)[1] if f&1 else j
                elif k==3: j+=2
        elif sid==10:
            cnt,j=leb(b,i)
            for _ in range(cnt):
                l,j=leb(b,j); code.append(l); j+=l
        elif sid==0:
            l,j=leb(b,i); nm=b[j:j+l].decode(errors='replace'); j+=l
            if nm=='name':
                while j<end:
                    t=b[j]; j+=1; sl,j=leb(b,j); se=j+sl
                    if t==1:
                        cnt,j=leb(b,j)
                        for _ in range(cnt):
                            idx,j=leb(b,j); l,j=leb(b,j); names[idx]=b[j:j+l].decode(errors='replace'); j+=l
                    j=se
        i=end
    return {names.get(nimp+k,f'f{k}'):sz for k,sz in enumerate(code)}
a=parse(sys.argv[1])
if len(sys.argv)>2:
    o=parse(sys.argv[2]); d={k:a.get(k,0)-o.get(k,0) for k in set(a)|set(o)}
    print('total', sum(a.values()), sum(o.values()))
    for k,v in sorted(d.items(), key=lambda kv:-abs(kv[1]))[:40]:
        print(v, a.get(k,0), k[:150])
else:
    for k,v in sorted(a.items(), key=lambda kv:-kv[1])[:30]:
        print(v,k[:150])
