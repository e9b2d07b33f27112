#!/usr/bin/env python3
"""Random mixes of domain.md §3–§6, with every expectation taken from a second, naive
reading of the spec written here in Python (not from the engine): paths 1–6 of §4
(direct, key role with the IKS exception, RoleMap, client delegation, main unit →
sub-unit, the ENK owner rule), §5's delegation check (packages, the hovedadministrator
template, §11.3 for a person party, resources) and who may revoke or remove, §6's
cascades (register roles ending, revokes and their forwarded copies, removed agents and
connections, deaths, the Altinn 2 cut-off), and `simulate` (the lost set and the counts
as the difference between the model before and after the event).

    python3 tools/spec_mixes.py /tmp/mixes 0 200     # writes /tmp/mixes/mix-0.yaml ...
    ./target/release/delegraph test /tmp/mixes/*.yaml

A failing step is a disagreement between the engine and this reading: decide from
domain.md which one is wrong. The catalogue is read from ../shared/reference/altinn (the
spec's copy, not the engine's compiled one). Writes YAML with PyYAML, JSON (which is
YAML too) without it.
"""
import argparse
import json
import os
import random

try:
    import yaml
except ImportError:  # JSON is YAML too: the files read the same without PyYAML
    yaml = None

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("first", type=int)
ap.add_argument("last", type=int)
ap.add_argument("--events", type=int, default=90)
ap.add_argument("--catalogue", default=os.path.join(os.path.dirname(__file__), "../../shared/reference/altinn"))
args = ap.parse_args()
REF = args.catalogue + "/"
RP = json.load(open(REF + "role_packages.json"))["items"]
REF='/work/shared/reference/altinn/'

RM=json.load(open(REF+'role_map.json'))['items']
ROLES=json.load(open(REF+'roles.json'))['items']
PK={p['code']:p for p in json.load(open(REF+'packages.json'))['items']}
KEY={x['code'] for x in ROLES if x['is_key_role']}
A2={x['code'] for x in ROLES if x['provider']=='sys-altinn2'}
def pcode(u): return u.split(':')[-1]
ROWS={}
for x in RP:
    ROWS.setdefault(x['role_code'],[]).append((pcode(x['package_urn']),x['entity_variant'],x['has_access'],x['can_delegate']))
RMAP={}
for x in RM: RMAP.setdefault(x['has_role_code'],[]).append(x['gets_role_code'])
OWNER_ROLES={'regnskapsforer','revisor','a0237','a0238','a0239','a0240','a0241'}
MAINLINK={'hovedenhet','ikke-naeringsdrivende-hovedenhet'}
def role_pk(role, ut, access=True):
    out=set()
    for p,v,ha,cd in ROWS.get(role,[]):
        if v is not None and v!=ut: continue
        if (ha if access else cd): out.add(p)
    return out

class W:
    def __init__(s):
        s.parties={}   # id -> dict(kind, ut, main, alive)
        s.asg={}       # (f,t,role) -> set(packages)
        s.dlg={}       # (client, agent, fac, role) -> set(packages)
        s.res={}       # (f,t) -> {res: set(actions)} on the rightholder assignment
        s.inst={}      # (f,t) -> {(res,i): set(actions)}
        s.dres={}      # dlg key -> {res: set(actions)}
        s.retired=False
    def clone(s):
        w=W(); w.parties={k:dict(v) for k,v in s.parties.items()}
        w.asg={k:set(v) for k,v in s.asg.items()}; w.dlg={k:set(v) for k,v in s.dlg.items()}
        cp=lambda d:{k:{kk:set(vv) for kk,vv in v.items()} for k,v in d.items()}
        w.retired=s.retired; w.res=cp(s.res); w.inst=cp(s.inst); w.dres=cp(s.dres); return w
    def ut(s,n): return s.parties[n].get('ut')
    def subs(s,m): return [k for k,v in s.parties.items() if v.get('main')==m]
    def living_person(s,n): p=s.parties[n]; return p['kind']=='person' and p['alive']
    def carried(s, role, granted, at):
        return set(granted) if role=='rettighetshaver' else role_pk(role, s.ut(at))
    def records(s, x):
        base=[]
        for (f,t,r),g in s.asg.items():
            if t==x and r not in MAINLINK and r!='supplier':
                base.append(dict(frm=f, role=r, pk=s.carried(r,g,f), kind='direct', grant=g, res=s.res.get((f,t),{}) if r=='rettighetshaver' else {}, inst=s.inst.get((f,t),{}) if r=='rettighetshaver' else {}))
        if s.living_person(x):
            base.append(dict(frm=x, role='privatperson', pk=role_pk('privatperson',None), kind='self', grant=set(), res={}, inst={}))
        for (o,t,k),_ in list(s.asg.items()):
            if t!=x or k not in KEY: continue
            if k=='deltaker-delt-ansvar' and s.ut(o)=='IKS': continue
            for (f,t2,r),g in s.asg.items():
                if t2!=o or r in MAINLINK or r=='supplier': continue
                if r=='deltaker-delt-ansvar' and s.ut(f)=='IKS': continue
                base.append(dict(frm=f, role=r, pk=s.carried(r,g,f), kind='key', grant=g, res=s.res.get((f,o),{}) if r=='rettighetshaver' else {}, inst=s.inst.get((f,o),{}) if r=='rettighetshaver' else {}))
        mapped=[]
        for r in base:
            for g in RMAP.get(r['role'],[]):
                if s.retired and g in A2: continue
                mapped.append(dict(frm=r['frm'], role=g, pk=role_pk(g, s.ut(r['frm'])), kind=r['kind']+'-map', grant=set(), res={}, inst={}))
        base+=mapped
        for (c,a,fac,r),pk in s.dlg.items():
            if a==x: base.append(dict(frm=c, role=r, pk=set(pk), kind='deleg', grant=set(), res=s.dres.get((c,a,fac,r),{}), inst={}))
        rep=[]
        for r in base:
            for sub in s.subs(r['frm']):
                pk = set(r['pk']) if r['kind']=='deleg' else (set(r['grant']) if r['role']=='rettighetshaver' else role_pk(r['role'], s.ut(sub)))
                rep.append(dict(r, frm=sub, pk=pk, kind=r['kind']+'-sub', inst={}))
            if r['role'] in OWNER_ROLES and s.ut(r['frm'])=='ENK':
                for (e,p,rr) in s.asg:
                    if e==r['frm'] and rr=='innehaver' and s.living_person(p):
                        rep.append(dict(r, frm=p, kind=r['kind']+'-owner'))
        return base+rep
    def rights(s,x,f):
        pk=set(); roles=set()
        for r in s.records(x):
            if r['frm']!=f: continue
            pk|=r['pk']
            if not r['kind'].startswith('deleg') and r['role'] not in ('rettighetshaver','agent'): roles.add(r['role'])
        return pk, roles
    def authorized(s,x): return {r['frm'] for r in s.records(x)}
    def all_access(s):
        out=set()
        for x in s.parties:
            for r in s.records(x):
                for p in r['pk']: out.add((x,r['frm'],p))
        return out
    # --- mutations
    def remove_asg(s,f,t,r):
        s.asg.pop((f,t,r),None)
        if r=='rettighetshaver': s.res.pop((f,t),None); s.inst.pop((f,t),None)
        for k in list(s.dlg):
            c,a,fac,rr=k
            if (c==f and fac==t and rr==r) or (r=='agent' and fac==f and a==t): del s.dlg[k]; s.dres.pop(k,None)
        return
    def died(s,p):
        if not s.parties[p]['alive']: return
        for (f,t,r) in list(s.asg):
            if (f==p or t==p) and (r=='rettighetshaver' or r in A2): s.remove_asg(f,t,r)
            elif t==p and r=='agent': s.remove_asg(f,t,r)
        s.parties[p]['alive']=False
    def revoke(s,f,t,p):
        g=s.asg.get((f,t,'rettighetshaver'))
        if g is None or p not in g: return
        g.discard(p)
        for k in list(s.dlg):
            c,a,fac,rr=k
            if c==f and fac==t and rr=='rettighetshaver' and p in s.dlg[k]:
                s.dlg[k].discard(p)
                if not s.dlg[k] and not s.dres.get(k): del s.dlg[k]; s.dres.pop(k,None)
    def held_through(s,c,f,r):
        g=s.asg.get((c,f,r))
        if g is None: return set()
        return s.carried(r,g,c)

def _ptype(w,n):
    return {'organisation':'Organisasjon','person':'Person'}.get(w.parties[n]['kind'])
def can_delegate(w,u,P,p):
    pkg=PK[p]
    if not pkg['is_assignable'] or pkg['entity_type']!=_ptype(w,P): return False
    out=set(); admin=False; am=False
    for r in w.records(u):
        if r['frm']!=P: continue
        k=r['kind']
        if k.endswith('-owner') or '-map' in k or k.startswith('deleg'): continue
        if 'hovedadministrator' in r['pk']: admin=True
        if 'innbygger-tilgangsstyring-privatperson' in r['pk']: am=True
        if r['role']=='rettighetshaver': out|=set(r['pk'])-{'hovedadministrator'}
        else: out|=role_pk(r['role'], w.ut(P), access=False)
    if admin: out|=role_pk('hovedadministrator', w.ut(P), access=False)-{'hovedadministrator'}
    if w.parties[P]['kind']=='person' and u!=P and not am: return False
    return p in out

RES={'svc1':dict(delegable=True, rules=[(['read'],[('p','fiske')]),(['write'],[('r','a0239')]),(['sign'],[('r','regna'),('p','regnskapsforer-lonn')])]),
     'svc2':dict(delegable=False, rules=[(['read'],[('r','daglig-leder')])])}
def permit(w,x,f,res,action,inst=None, recs=None):
    recs=[r for r in (recs if recs is not None else w.records(x)) if r['frm']==f]
    roles=set(); pk=set()
    for r in recs:
        pk|=r['pk']
        if not r['kind'].startswith('deleg'): roles.add(r['role'])
    for acts,toks in RES[res]['rules']:
        if action in acts:
            for t,v in toks:
                if t=='p' and v in pk: return True
                if t=='r' and v in roles and not (w.retired and v in A2) and v not in ('rettighetshaver','agent','appstyrt-rettighetshaver'): return True
    for r in recs:
        if '-map' in r['kind']: continue
        if action in r.get('res',{}).get(res,set()): return True
        if inst is not None and action in r.get('inst',{}).get((res,inst),set()): return True
    return False
def can_delegate_res(w,u,P,res,action):
    if not RES[res]['delegable']: return False
    if w.parties[P]['kind']=='person' and u!=P:
        am=any(r['frm']==P and 'innbygger-tilgangsstyring-privatperson' in r['pk'] and not r['kind'].endswith('-owner') and '-map' not in r['kind'] and not r['kind'].startswith('deleg') for r in w.records(u))
        if not am: return False
    recs=[r for r in w.records(u) if not r['kind'].startswith('deleg')]
    return permit(w,u,P,res,action,recs=recs)
def res_universe(*ws):
    u=set()
    for n,d in RES.items():
        for acts,_ in d['rules']:
            for a in acts: u.add((n,a))
    for w in ws:
        for m in list(w.res.values())+list(w.dres.values()):
            for n,acts in m.items():
                for a in acts: u.add((n,a))
    return u
def all_res_access(w, uni):
    out=set()
    for x in w.parties:
        recs=w.records(x)
        for f in {r['frm'] for r in recs}:
            for n,a in uni:
                if permit(w,x,f,n,a,recs=recs): out.add((x,f,n,a))
    return out
def may_remove(w,by,f,t,pkgs,res):
    if by==t: return True
    if any(r['frm']==f and 'tilgangsstyrer' in r['pk'] for r in w.records(by)): return True
    if w.parties[f]['kind']=='person':
        if by==f: return True
        if any(r['frm']==f and 'innbygger-tilgangsstyring-privatperson' in r['pk'] and not r['kind'].endswith('-owner') and '-map' not in r['kind'] and not r['kind'].startswith('deleg') for r in w.records(by)): return True
    if not pkgs and not res: return False
    return all(can_delegate(w,by,f,p) for p in pkgs) and all(can_delegate_res(w,by,f,n,a) for n,acts in res for a in acts)

CD=['hovedadministrator','tilgangsstyrer','klientadministrator','fiske','skattegrunnlag','lonn','regnskapsforer-lonn','innbygger-kjoretoy','innbygger-tilgangsstyring-privatperson','ansvarlig-revisor','tjenester-nuf','post-til-virksomheten-med-taushetsbelagt-innhold']
def gen(seed, n_events):
    R=random.Random(seed); w=W(); steps=[]
    orgs={'a':'AS','b':'AS','c':'NUF','c1':'BEDR','e':'ENK','i':'IKS','k':'KS','d':'DA'}
    persons=['p1','p2','p3','p4','p5']
    for o,u in orgs.items():
        w.parties[o]=dict(kind='organisation', ut=u, main='c' if o=='c1' else None, alive=True)
        steps.append({'party':{'id':o,'kind':'organisation','unit_type':u, **({'main_unit':'c'} if o=='c1' else {})}})
    for p in persons:
        w.parties[p]=dict(kind='person', alive=True); steps.append({'party':{'id':p,'kind':'person'}})
    steps.append({'resource':{'id':'svc1','rules':[{'actions':['read'],'any_of':['urn:altinn:accesspackage:fiske']},{'actions':['write'],'any_of':['urn:altinn:rolecode:A0239']},{'actions':['sign'],'any_of':['urn:altinn:rolecode:regna','urn:altinn:accesspackage:regnskapsforer-lonn']}]}})
    steps.append({'resource':{'id':'svc2','delegable':False,'rules':[{'actions':['read'],'any_of':['urn:altinn:external-role:ccr:daglig-leder']}]}})
    alive=lambda: [p for p in persons if w.parties[p]['alive']]
    O=list(orgs)
    def q():
        x=R.choice(O+persons); au=sorted(w.authorized(x)); f=R.choice(au) if au and R.random()<0.8 else R.choice(O+persons)
        pk,roles=w.rights(x,f)
        steps.append({'rights':{'subject':x,'party':f,'packages':{'exact':sorted(pk)},'roles':{'exact':sorted(roles)}}})
        for _ in range(3):
            x=R.choice(O+persons); au=sorted(w.authorized(x)); f=R.choice(au) if au and R.random()<0.8 else R.choice(O+persons); n=R.choice(['svc1','svc2']); a=R.choice(['read','write','sign','x'])
            i=R.choice([None,None,'i1'])
            st={'subject':x,'party':f,'resource':n,'action':a}
            if i: st['instance']=i
            st['expect']='permit' if permit(w,x,f,n,a,i) else 'deny'
            steps.append({'check':st})
            u=R.choice(persons+O); au=sorted(w.authorized(u)); P=R.choice(au) if au and R.random()<0.8 else R.choice(O+persons)
            steps.append({'can_delegate':{'by':u,'party':P,'resource':n,'action':a,'expect':can_delegate_res(w,u,P,n,a)}})
        for _ in range(3):
            u=R.choice(persons+O); P=R.choice(O+persons); p=R.choice(CD)
            steps.append({'can_delegate':{'by':u,'party':P,'package':p,'expect':can_delegate(w,u,P,p)}})
        f=R.choice(O+persons); p=R.choice(['fiske','jordbruk','skattegrunnlag','regnskapsforer-lonn','lonn','innbygger-kjoretoy','ansvarlig-revisor'])
        steps.append({'holders':{'party':f,'package':p,'expect':sorted(x for x in w.parties if p in w.rights(x,f)[0])}})
        ags=[k for k in w.asg if k[2]=='agent']
        if ags:
            fac,ag,_=R.choice(sorted(ags))
            steps.append({'clients':{'facilitator':fac,'agent':ag,'expect':sorted({k[0] for k in w.dlg if k[1]==ag and k[2]==fac})}})
        x=R.choice(O+persons)
        steps.append({'authorized_parties':{'subject':x,'expect':sorted(w.authorized(x))}})
    def sim(ev, apply_fn):
        before=w.all_access(); w2=w.clone(); apply_fn(w2)
        lost=before-w2.all_access()
        uni=res_universe(w,w2)
        rlost=all_res_access(w,uni)-all_res_access(w2,uni)
        ra=len([k for k in w.asg if k not in w2.asg]); rd=len([k for k in w.dlg if k not in w2.dlg])
        st={'event':ev,'expect_lost':[{'subject':x,'party':f,'package':p} for x,f,p in sorted(lost)]+[{'subject':x,'party':f,'resource':n,'action':a} for x,f,n,a in sorted(rlost)]}
        if not ('unregister_role' in ev and ev['unregister_role']['role']=='hovedenhet'):
            st['expect_removed']={'assignments':ra,'delegations':rd}
        steps.append({'simulate':st})
    for _ in range(n_events):
        kind=R.choice(['retire','retype','retype','revokeby','revokeby','rmconnby','rmconnby','rrevoke','undeleg','rgrant','rgrant','rdeleg','rdeleg','grantby','grantby','grantby','reg','reg','reg','grant','grant','grant','agent','deleg','deleg','deleg','revoke','unreg','rmagent','rmconn','a2','rma2','died','link'])
        ev=None; fn=None; removal=False
        if kind=='reg':
            choice=R.choice(['ceo','acct','komp','dtpr','innh','medl'])
            if choice=='ceo': f,t,r=R.choice(O),R.choice(alive() or persons),R.choice(['daglig-leder','styreleder'])
            elif choice=='medl': f,t,r=R.choice(O),R.choice(persons),'styremedlem'
            elif choice=='acct': f,t,r=R.choice(O),R.choice(['a','b','k']),R.choice(['regnskapsforer','revisor','forretningsforer'])
            elif choice=='komp': f,t,r='k',R.choice(['a','b']),'komplementar'
            elif choice=='dtpr': f,t,r=R.choice(['i','d']),R.choice(persons+['a','b']),'deltaker-delt-ansvar'
            else:
                if any(k[0]=='e' and k[2]=='innehaver' for k in w.asg): continue
                f,t,r='e',R.choice(persons),'innehaver'
            if f==t: continue
            ev={'register_role':{'from':f,'to':t,'role':r}}
            def fn(w,f=f,t=t,r=r): w.asg.setdefault((f,t,r),set())
        elif kind=='retire':
            if w.retired or R.random()<0.7: continue
            removal=True
            ev={'retire_a2_roles':{}}
            def fn(w):
                for k in list(w.asg):
                    if k[2] in A2: w.remove_asg(*k)
                w.retired=True
        elif kind=='a2':
            f=R.choice(O); t=R.choice(O+persons); r=R.choice(['a0239','utinn','a0237'])
            if f==t: continue
            if w.retired:
                steps.append({'a2_role':{'from':f,'to':t,'role':r,'expect_error':'not_assignable'}}); continue
            ev={'a2_role':{'from':f,'to':t,'role':r}}
            def fn(w,f=f,t=t,r=r): w.asg.setdefault((f,t,r),set())
        elif kind=='grant':
            if R.random()<0.2:
                f=R.choice(alive() or persons); t=R.choice(O+alive()); p='innbygger-kjoretoy'
            else:
                f=R.choice(O); t=R.choice(O+alive()); p=R.choice(['fiske','jordbruk','skattegrunnlag','lonn'])
            if f==t: continue
            ev={'grant':{'from':f,'to':t,'package':p}}
            def fn(w,f=f,t=t,p=p): w.asg.setdefault((f,t,'rettighetshaver'),set()).add(p)
        elif kind=='rgrant':
            f=R.choice(O+alive()); t=R.choice(O+alive()); n=R.choice(['svc1','svc2']); acts=R.sample(['read','write','sign','x'],R.randint(1,2))
            if f==t: continue
            i=R.choice([None,'i1'])
            ev={'grant':{'from':f,'to':t,'resource':n,'actions':acts, **({'instance':i} if i else {})}}
            def fn(w,f=f,t=t,n=n,acts=acts,i=i):
                w.asg.setdefault((f,t,'rettighetshaver'),set())
                if i: w.inst.setdefault((f,t),{}).setdefault((n,i),set()).update(acts)
                else: w.res.setdefault((f,t),{}).setdefault(n,set()).update(acts)
        elif kind=='rdeleg':
            ags=[k for k in w.asg if k[2]=='agent' and w.parties[k[1]]['kind']=='person']
            if not ags: continue
            fac,agent,_=R.choice(ags)
            cas=[(c,n) for (c,t),m in w.res.items() if t==fac for n in m if m[n]]
            if not cas: continue
            c,n=R.choice(sorted(cas))
            if not RES[n]['delegable']:
                steps.append({'delegate':{'client':c,'facilitator':fac,'agent':agent,'role':'rettighetshaver','resources':[n],'expect_error':'not_delegable'}}); continue
            acts=sorted(w.res[(c,fac)][n]); acts=R.sample(acts,R.randint(1,len(acts)))
            ev={'delegate':{'client':c,'facilitator':fac,'agent':agent,'role':'rettighetshaver','resources':[{'resource':n,'actions':acts}]}}
            def fn(w,k=(c,agent,fac,'rettighetshaver'),n=n,acts=acts):
                w.dlg.setdefault(k,set()); w.dres.setdefault(k,{}).setdefault(n,set()).update(acts)
        elif kind=='revokeby':
            gs=[(k,p) for k,v in w.asg.items() if k[2]=='rettighetshaver' for p in v]
            if not gs: continue
            (f,t,_),p=R.choice(sorted(gs)); by=R.choice(persons)
            if not may_remove(w,by,f,t,[p],[]):
                steps.append({'revoke':{'from':f,'to':t,'package':p,'by':by,'expect_error':'not_authorized'}}); continue
            removal=True
            ev={'revoke':{'from':f,'to':t,'package':p,'by':by}}
            def fn(w,f=f,t=t,p=p): w.revoke(f,t,p)
        elif kind=='rmconnby':
            rs=[k for k in w.asg if k[2]=='rettighetshaver']
            if not rs: continue
            f,t,_=R.choice(sorted(rs)); by=R.choice(persons)
            pk=sorted(w.asg[(f,t,'rettighetshaver')]); res=[(n,a) for n,a in w.res.get((f,t),{}).items()]+[(n,a) for (n,i),a in w.inst.get((f,t),{}).items()]
            if not may_remove(w,by,f,t,pk,res):
                steps.append({'remove_connection':{'from':f,'to':t,'cascade':True,'by':by,'expect_error':'not_authorized'}}); continue
            removal=True
            ev={'remove_connection':{'from':f,'to':t,'cascade':True,'by':by}}
            def fn(w,f=f,t=t): w.remove_asg(f,t,'rettighetshaver')
        elif kind=='retype':
            o=R.choice(['c','e','a','i','c1']); u=R.choice(['AS','NUF','ENK','IKS','DA'] if o!='c1' else ['BEDR','NUF','AAFY'])
            removal=True
            ev={'party':{'id':o,'kind':'organisation','unit_type':u}}
            def fn(w,o=o,u=u): w.parties[o]['ut']=u
        elif kind=='rrevoke':
            gs=[(k,n,a) for k,m in w.res.items() for n,acts in m.items() for a in acts]
            if not gs: continue
            (f,t),n,a=R.choice(sorted(gs)); removal=True
            ev={'revoke':{'from':f,'to':t,'resource':n,'actions':[a]}}
            def fn(w,f=f,t=t,n=n,a=a):
                m=w.res[(f,t)]; m[n].discard(a)
                if not m[n]: del m[n]
                for k in list(w.dlg):
                    c,ag,fac,rr=k
                    if c==f and fac==t and rr=='rettighetshaver' and a in w.dres.get(k,{}).get(n,set()):
                        w.dres[k][n].discard(a)
                        if not w.dres[k][n]: del w.dres[k][n]
                        if not w.dlg[k] and not w.dres[k]: del w.dlg[k]; w.dres.pop(k,None)
        elif kind=='undeleg':
            ks=sorted(w.dlg)
            if not ks: continue
            c,ag,fac,r=R.choice(ks); removal=True
            pk=sorted(w.dlg[(c,ag,fac,r)])
            if pk and R.random()<0.6:
                p=R.choice(pk)
                ev={'undelegate':{'client':c,'facilitator':fac,'agent':ag,'packages':[p]}}
                def fn(w,c=c,ag=ag,fac=fac,p=p):
                    for k in list(w.dlg):
                        if k[:3]==(c,ag,fac) and p in w.dlg[k]:
                            w.dlg[k].discard(p)
                            if not w.dlg[k] and not w.dres.get(k): del w.dlg[k]; w.dres.pop(k,None)
            else:
                ev={'undelegate':{'client':c,'facilitator':fac,'agent':ag}}
                def fn(w,c=c,ag=ag,fac=fac):
                    for k in list(w.dlg):
                        if k[:3]==(c,ag,fac): del w.dlg[k]; w.dres.pop(k,None)
        elif kind=='grantby':
            u=R.choice(persons); P=R.choice(O+persons); t=R.choice(O+alive()); p=R.choice(CD)
            if P==t: continue
            pkg=PK[p]
            if (not pkg['is_assignable'] or pkg['entity_type']!=_ptype(w,P)
                or (p=='hovedadministrator' and w.parties[t]['kind']=='organisation')):
                steps.append({'grant':{'from':P,'to':t,'package':p,'by':u,'expect_error':'not_assignable'}}); continue
            if not can_delegate(w,u,P,p):
                steps.append({'grant':{'from':P,'to':t,'package':p,'by':u,'expect_error':'not_authorized'}}); continue
            ev={'grant':{'from':P,'to':t,'package':p,'by':u}}
            def fn(w,f=P,t=t,p=p): w.asg.setdefault((f,t,'rettighetshaver'),set()).add(p)
        elif kind=='agent':
            f=R.choice(['a','b','k']); t=R.choice(alive() or persons)
            if not w.parties[t]['alive']: continue
            ev={'add_agent':{'facilitator':f,'agent':t}}
            def fn(w,f=f,t=t): w.asg.setdefault((f,t,'agent'),set())
        elif kind=='deleg':
            ags=[k for k in w.asg if k[2]=='agent']
            if not ags: continue
            fac,agent,_=R.choice(ags)
            cas=[k for k in w.asg if k[1]==fac and k[2] not in ('agent',) and k[2] not in MAINLINK and k[2]!='supplier']
            if not cas: continue
            c,_,r=R.choice(cas)
            held=sorted(p for p in w.held_through(c,fac,r) if PK[p]['is_delegable'])
            if R.random()<0.15 or not held:
                p=R.choice(['fiske','regnskapsforer-lonn','skattegrunnlag','ansvarlig-revisor'])
                if p in held: continue
                steps.append({'delegate':{'client':c,'facilitator':fac,'agent':agent,'role':r,'packages':[p],'expect_error':'not_delegable'}})
                continue
            ps=R.sample(held, min(len(held), R.randint(1,2)))
            ev={'delegate':{'client':c,'facilitator':fac,'agent':agent,'role':r,'packages':ps}}
            def fn(w,k=(c,agent,fac,r),ps=ps): w.dlg.setdefault(k,set()).update(ps)
        elif kind=='revoke':
            gs=[(k,p) for k,v in w.asg.items() if k[2]=='rettighetshaver' for p in v]
            if not gs: continue
            (f,t,_),p=R.choice(sorted(gs)); removal=True
            ev={'revoke':{'from':f,'to':t,'package':p}}
            def fn(w,f=f,t=t,p=p): w.revoke(f,t,p)
        elif kind=='unreg':
            rs=[k for k in w.asg if k[2] in ('daglig-leder','styreleder','styremedlem','regnskapsforer','revisor','forretningsforer','komplementar','deltaker-delt-ansvar','innehaver')]
            if not rs: continue
            f,t,r=R.choice(sorted(rs)); removal=True
            ev={'unregister_role':{'from':f,'to':t,'role':r}}
            def fn(w,f=f,t=t,r=r): w.remove_asg(f,t,r)
        elif kind=='rma2':
            rs=[k for k in w.asg if k[2] in A2]
            if not rs: continue
            f,t,r=R.choice(sorted(rs)); removal=True
            ev={'remove_a2_role':{'from':f,'to':t,'role':r}}
            def fn(w,f=f,t=t,r=r): w.remove_asg(f,t,r)
        elif kind=='rmagent':
            rs=[k for k in w.asg if k[2]=='agent']
            if not rs: continue
            f,t,r=R.choice(sorted(rs)); removal=True
            ev={'remove_agent':{'facilitator':f,'agent':t}}
            def fn(w,f=f,t=t,r=r): w.remove_asg(f,t,r)
        elif kind=='rmconn':
            rs=[k for k in w.asg if k[2]=='rettighetshaver']
            if not rs: continue
            f,t,r=R.choice(sorted(rs)); removal=True
            ev={'remove_connection':{'from':f,'to':t,'cascade':True}}
            def fn(w,f=f,t=t,r=r): w.remove_asg(f,t,r)
        elif kind=='died':
            p=R.choice(persons); removal=True
            ev={'died':{'person':p}}
            def fn(w,p=p): w.died(p)
        elif kind=='link':
            removal=True
            if w.parties['c1']['main']:
                ev={'unregister_role':{'from':'c1','to':'c','role':'hovedenhet'}}
                def fn(w): w.parties['c1']['main']=None
            else:
                ev={'party':{'id':'c1','kind':'organisation','main_unit':'c'}}
                def fn(w): w.parties['c1']['main']='c'
        if ev is None: continue
        if removal and R.random()<0.6: sim(ev, fn)
        steps.append(ev); fn(w)
        if R.random()<0.6: q()
    q(); q()
    return {'name':f'random mix {seed}','steps':steps}
os.makedirs(args.out, exist_ok=True)
for s in range(args.first, args.last):
    with open(os.path.join(args.out, f"mix-{s}.yaml"), "w") as f:
        doc = gen(s, args.events)
        f.write(yaml.safe_dump(doc, sort_keys=False, width=200) if yaml else json.dumps(doc, indent=1, ensure_ascii=False))
