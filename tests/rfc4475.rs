//! The SIP torture messages of RFC 4475, written here from the RFC's
//! descriptions (each named as the RFC names it, with its section), sent to
//! `sav serve` over UDP one by one: each gets the treatment the RFC expects
//! of a user agent (valid ones processed, invalid ones 400/416/420/501/505
//! or dropped), and sav answers OPTIONS after every one of them.
//!
//! `$VIA` stands for the test's own address (responses come back to it,
//! never to the RFC's example hosts); `$CL` for the body's length.

mod support;

use std::net::UdpSocket;
use std::time::Duration;

use support::raw_uac::{options_text, recv_until};
use support::*;

/// What sav must do with a message.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Answer with one of these final (or, for INVITE, first) codes.
    Status(&'static [u16]),
    /// Process it: the first answer is not an error (< 300).
    Processed,
    /// Say nothing (an invalid response, or one for no transaction).
    Silence,
}

struct Case {
    name: &'static str,
    section: &'static str,
    expect: Expect,
    message: &'static str,
}

const CASES: &[Case] = &[
    // 3.1.1 Valid messages.
    Case {
        name: "wsinv",
        section: "3.1.1.1 a short tortuous INVITE (its To-tag names no dialog of ours)",
        expect: Expect::Status(&[481]),
        message: "INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0
TO :
 sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n
from   : \"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>
  ;
  tag = 98asjd8
MaX-fOrWaRdS: 0068
Call-ID: wsinv.ndaksdj@192.0.2.1
Content-Length   : $CL
cseq: 0009
  INVITE
Via  : SIP  /   2.0
 /UDP
    $VIA;rport;branch=390skdjuw
s :
NewFangledHeader:   newfangled value
 continued newfangled value
UnknownHeaderWithUnusualValue: ;;,,;;,;
Content-Type: application/sdp
Route:
 <sip:services.example.com;lr;unknownwith=value;unknown-no-value>
v:  SIP  / 2.0  / TCP     spindle.example.com   ;
  branch  =   z9hG4bK9ikj8  ,
 SIP  /    2.0   / UDP  192.168.255.111   ; branch=
 z9hG4bK30239
m:\"Quoted string \\\"\\\"\" <sip:jdrosen@example.com> ; newparam =
      newvalue ;
  secondparam ; q = 0.33

v=0
o=mhandley 29739 7272939 IN IP4 192.0.2.3
s=-
c=IN IP4 192.0.2.4
t=0 0
m=audio 49217 RTP/AVP 0 12
m=video 3227 RTP/AVP 31
a=rtpmap:31 LPC
",
    },
    Case {
        name: "intmeth",
        section: "3.1.1.2 wide range of valid characters (an unknown method)",
        expect: Expect::Status(&[501, 405]),
        message: "!interesting-Method0123456789_*+`.%indeed'~ sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com SIP/2.0
Via: SIP/2.0/UDP $VIA;rport;branch=z9hG4bK-.!%66*_+`'~
To: \"BEL:\\\u{7} NUL:\\\u{0} DEL:\\\u{7f}\" <sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com>
From: token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%=\"работающий\";tag=_token~1'+`*%!-.
Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{
CSeq: 139122385 !interesting-Method0123456789_*+`.%indeed'~
Max-Forwards: 255
extensionHeader-!.%*+_`'~:﻿大停電
Content-Length: 0

",
    },
    Case {
        name: "esc01",
        section: "3.1.1.3 valid use of the % escaping mechanism",
        expect: Expect::Processed,
        message: "INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0
To: sip:%75se%72@example.com
From: <sip:I%20have%20spaces@example.net>;tag=938
Max-Forwards: 87
i: esc01.239409asdfakjkn23onasd0-3234
CSeq: 234234 INVITE
Via: SIP/2.0/UDP $VIA;rport;branch=z9hG4bKkdjuw
C: application/sdp
Contact:
  <sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>
Content-Length: $CL

v=0
o=mhandley 29739 7272939 IN IP4 192.0.2.1
s=-
c=IN IP4 192.0.2.1
t=0 0
m=audio 49217 RTP/AVP 0 12
m=video 3227 RTP/AVP 31
a=rtpmap:31 LPC
",
    },
    Case {
        name: "escnull",
        section: "3.1.1.4 escaped nulls in URIs (a REGISTER: not ours)",
        expect: Expect::Status(&[405]),
        message: "REGISTER sip:example.com SIP/2.0
To: sip:null-%00-null@example.com
From: sip:null-%00-null@example.com;tag=839923423
Max-Forwards: 70
Call-ID: escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd
CSeq: 14398234 REGISTER
Via: SIP/2.0/UDP $VIA;rport;branch=z9hG4bKkdjuw
Contact: <sip:%00@host5.example.com>
Contact: <sip:%00%00@host5.example.com>
L:0

",
    },
    Case {
        name: "esc02",
        section: "3.1.1.5 use of % when it is not an escape (an unknown method)",
        expect: Expect::Status(&[501, 405]),
        message: "RE%47IST%45R sip:registrar.example.com SIP/2.0
To: \"%Z%45\" <sip:resource@example.com>
From: \"%Z%45\" <sip:resource@example.com>;tag=f232jadfj23
Call-ID: esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf
Via: SIP/2.0/TCP $VIA;rport;branch=z9hG4bKasdf
CSeq: 29344 RE%47IST%45R
Max-Forwards: 70
Contact: <sip:alias1@host1.example.com>
C%6Fntact: <sip:alias2@host2.example.com>
Contact: <sip:alias3@host3.example.com>
l: 0

",
    },
    Case {
        name: "lwsdisp",
        section: "3.1.1.6 message with no LWS between display name and <",
        expect: Expect::Status(&[200]),
        message: "OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: caller<sip:caller@example.com>;tag=323
Max-Forwards: 70
Call-ID: lwsdisp.1234abcd@funky.example.com
CSeq: 60 OPTIONS
Via: SIP/2.0/UDP $VIA;rport;branch=z9hG4bKkdjuw
l: 0

",
    },
    Case {
        name: "longreq",
        section: "3.1.1.7 long values in header fields",
        expect: Expect::Processed,
        message: "INVITE sip:user@example.com SIP/2.0
To: \"I have a user name of extremeextremeextremeextremeextremeextremeextremeextremeextremeextremeextremeextremeextremeextremeextremeextremeextremeextreme proportion\"<sip:user@example.com:6000;unknownparam1=verylonguparamvalueverylonguparamvalueverylonguparamvalueverylonguparamvalue;longparamnamenamenamenamenamenamenamenamenamename=shortvalue;verylonglongparamnamenamenamenamenamenamenamenamenamename>
From: sip:amazinglylongcallernameamazinglylongcallernameamazinglylongcallernameamazinglylongcallernameamazinglylongcallername@example.net;tag=12982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982;unknownheaderparamnamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamename=unknowheaderparamvaluevaluevaluevaluevaluevaluevaluevaluevaluevaluevaluevaluevaluevaluevalue;unknownValuelessparamnameparamnameparamnameparamnameparamnameparamnameparamnameparamnameparamnameparamname
Call-ID: longreq.onereallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallylongcallid
CSeq: 3882340 INVITE
Unknown-LongLongLongLongLongLongLongLongLongLongLongLongLongLongLongLongLongLongLongLong-Name: unknown-longlonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglong-value; unknown-longlonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglong-parameter-name = unknown-longlonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglong-parameter-value
Via: SIP/2.0/UDP $VIA;rport;branch=z9hG4bK-longlonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglong
Via: SIP/2.0/TCP sip33.example.com
Via: SIP/2.0/TCP sip32.example.com
Via: SIP/2.0/TCP sip31.example.com
Via: SIP/2.0/TCP sip30.example.com
Via: SIP/2.0/TCP sip29.example.com
Via: SIP/2.0/TCP sip28.example.com
Via: SIP/2.0/TCP sip27.example.com
Via: SIP/2.0/TCP sip26.example.com
Via: SIP/2.0/TCP sip25.example.com
Via: SIP/2.0/TCP sip24.example.com
Via: SIP/2.0/TCP sip23.example.com
Via: SIP/2.0/TCP sip22.example.com
Via: SIP/2.0/TCP sip21.example.com
Via: SIP/2.0/TCP sip20.example.com
Max-Forwards: 70
Contact: <sip:amazinglylongcallernameamazinglylongcallernameamazinglylongcallernameamazinglylongcallernameamazinglylongcallername@host5.example.net>
Content-Type: application/sdp
l: $CL

v=0
o=mhandley 29739 7272939 IN IP4 192.0.2.1
s=-
c=IN IP4 192.0.2.1
t=0 0
m=audio 49217 RTP/AVP 0
",
    },
    Case {
        name: "dblreq",
        section: "3.1.1.8 extra trailing octets in a UDP datagram (a REGISTER: not ours)",
        expect: Expect::Status(&[405]),
        message: "REGISTER sip:example.com SIP/2.0
To: sip:j.user@example.com
From: sip:j.user@example.com;tag=43251j3j324
Max-Forwards: 8
I: dblreq.0ha0isndaksdj99sdfafnl3lk233412
Contact: sip:j.user@host.example.com
CSeq: 8 REGISTER
Via: SIP/2.0/UDP $VIA;rport;branch=z9hG4bKkdjuw23492
Content-Length: 0


INVITE sip:joe@example.com SIP/2.0
t: sip:joe@example.com
From: sip:caller@example.net;tag=141334
Max-Forwards: 8
Call-ID: dblreq.0ha0isnda977644900765@192.0.2.15
CSeq: 8 INVITE
Via: SIP/2.0/UDP $VIA;rport;branch=z9hG4bKkdjuw380234
Content-Type: application/sdp
Content-Length: 0

",
    },
    Case {
        name: "semiuri",
        section: "3.1.1.9 semicolon-separated parameters in URI user part",
        expect: Expect::Status(&[200]),
        message: "OPTIONS sip:user;par=u%40example.net@example.com SIP/2.0
To: sip:j_user@example.com
From: sip:caller@example.org;tag=33242
Max-Forwards: 3
Call-ID: semiuri.0ha0isndaksdj
CSeq: 8 OPTIONS
Accept: application/sdp, application/pkcs7-mime,
        multipart/mixed, multipart/signed,
        message/sip, message/sipfrag
Via: SIP/2.0/UDP $VIA;rport;branch=z9hG4bKkdjuw
l: 0

",
    },
    Case {
        name: "transports",
        section: "3.1.1.10 varied and unknown transport types",
        expect: Expect::Status(&[200]),
        message: "OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: <sip:caller@example.com>;tag=323
Max-Forwards: 70
Call-ID:  transports.kijh4akdnaqjkwendsasfdj
Accept: application/sdp
CSeq: 60 OPTIONS
Via: SIP/2.0/UDP $VIA;rport;branch=z9hG4bKkdjuw
Via: SIP/2.0/SCTP t2.example.com;branch=z9hG4bKklasjdhf
Via: SIP/2.0/TLS t3.example.com;branch=z9hG4bK2980unddj
Via: SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en
Via: SIP/2.0/TCP t5.example.com;branch=z9hG4bK0a9idfnee
l: 0

",
    },
    Case {
        name: "mpart01",
        section: "3.1.1.11 multipart MIME message (a MESSAGE: not ours)",
        expect: Expect::Status(&[405, 415]),
        message: "MESSAGE sip:kumiko@example.org SIP/2.0
Via: SIP/2.0/UDP $VIA;rport;branch=z9hG4bK-d8754z-9ff5cb8b8ab8e0a1-1---d8754z-;rport
Max-Forwards: 70
To: <sip:kumiko@example.org>
From: <sip:fluffy@example.com>;tag=2fb0dcc9
Call-ID: 3d9485ad0c49859b@Zmx1ZmZ5LW1hYy0xNi5sb2NhbA..
CSeq: 1 MESSAGE
Content-Transfer-Encoding: binary
Content-Type: multipart/mixed;boundary=7a9cbec02ceef655
Date: Sat, 15 Oct 2005 04:44:56 GMT
User-Agent: SIPimp.org/0.2.5 (curses)
Content-Length: $CL

--7a9cbec02ceef655
Content-Type: text/plain
Content-Transfer-Encoding: binary

Hello
--7a9cbec02ceef655--
",
    },
    Case {
        name: "unreason",
        section: "3.1.1.12 unusual reason phrase (a response for no transaction)",
        expect: Expect::Silence,
        message: "SIP/2.0 200 = 2**3 * 5**2 но сто девяносто девять - простое
Via: SIP/2.0/UDP $VIA;branch=z9hG4bK-39234-23523
Call-ID: unreason.1234ksdfak3j2erwedfsASdf
CSeq: 35 INVITE
From: sip:user@example.com;tag=11141343
To: sip:user@example.edu;tag=2229
Content-Length: 0
Contact: <sip:user@host198.example.com>

",
    },
    Case {
        name: "noreason",
        section: "3.1.1.13 empty reason phrase (a response for no transaction)",
        expect: Expect::Silence,
        message: "SIP/2.0 100 
Via: SIP/2.0/UDP $VIA;branch=z9hG4bK-39234-23523
Call-ID: noreason.asndj203insdf99223ndf
CSeq: 35 INVITE
From: <sip:user@example.com>;tag=39ansfi3
To: <sip:user@example.edu>;tag=902jndnke3
Content-Length: 0
Contact: <sip:user@host105.example.com>

",
    },
    // 3.1.2 Invalid messages.
    Case {
        name: "badinv01",
        section: "3.1.2.1 extraneous header field separators",
        expect: Expect::Status(&[400]),
        message: "INVITE sip:user@example.com SIP/2.0
To: sip:j.user@example.com
From: sip:caller@example.net;tag=134161461246
Max-Forwards: 7
Call-ID: badinv01.0ha0isndaksdjasdf3234nas
CSeq: 8 INVITE
Via: SIP/2.0/UDP $VIA;rport;;branch=z9hG4bKkdjuw23492
Content-Type: application/sdp
l: 0

",
    },
    Case {
        name: "clerr",
        section: "3.1.2.2 Content-Length larger than the message",
        expect: Expect::Status(&[400]),
        message: "INVITE sip:user@example.com SIP/2.0
Max-Forwards: 80
To: sip:j.user@example.com
From: sip:caller@example.net;tag=93942939o2
Contact: <sip:caller@hungry.example.net>
Call-ID: clerr.0ha0isndaksdjweiafasdk3
CSeq: 8 INVITE
Via: SIP/2.0/UDP $VIA;rport;branch=z9hG4bK-39234-23523
Content-Type: application/sdp
Content-Length: 9999

v=0
o=mhandley 29739 7272939 IN IP4 192.0.2.155
s=-
c=IN IP4 192.0.2.155
t=0 0
m=audio 49217 RTP/AVP 0
",
    },
    Case {
        name: "ncl",
        section: "3.1.2.3 negative Content-Length",
        expect: Expect::Status(&[400]),
        message: "INVITE sip:user@example.com SIP/2.0
Max-Forwards: 254
To: sip:j.user@example.com
From: sip:caller@example.net;tag=32394234
Call-ID: ncl.0ha0isndaksdj2193423r542w35
CSeq: 0 INVITE
Via: SIP/2.0/UDP $VIA;rport;branch=z9hG4bKkdjuw
Contact: <sip:caller@example53.example.net>
Content-Type: application/sdp
Content-Length: -999

v=0
o=mhandley 29739 7272939 IN IP4 192.0.2.53
s=-
c=IN IP4 192.0.2.53
t=0 0
m=audio 49217 RTP/AVP 0
",
    },
    Case {
        name: "scalar02",
        section: "3.1.2.4 request scalar fields with overlarge values",
        expect: Expect::Status(&[400]),
        message: "REGISTER sip:example.com SIP/2.0
Via: SIP/2.0/TCP $VIA;rport;branch=z9hG4bKkdjuw
Max-Forwards: 300
From: sip:user@example.com;tag=932Xx
To: sip:user@example.com
Call-ID: scalar02.23o0pd9vanlq3wnrlnewofjas9ui32
CSeq: 36893488147419103232 REGISTER
Contact: <sip:user@host129.example.com>
  ;expires=280297596632815
Expires: 1152921504606846976
Content-Length: 0

",
    },
    Case {
        name: "scalarlg",
        section: "3.1.2.5 response scalar fields with overlarge values",
        expect: Expect::Silence,
        message: "SIP/2.0 503 Service Unavailable
Via: SIP/2.0/TCP $VIA;branch=z9hG4bKzzxdiwo34sw;received=192.0.2.129
To: <sip:user@example.com>
From: <sip:other@example.net>;tag=2easdjfejw
CSeq: 9292394834772304023312 OPTIONS
Call-ID: scalarlg.noase0of0234hn2qofoaf0232aewf2394r
Retry-After: 949302838503028349304023988
Warning: 1812 overture \"In Progress\"
Content-Length: 0

",
    },
    Case {
        name: "quotbal",
        section: "3.1.2.6 unterminated quoted string in display name",
        expect: Expect::Status(&[400]),
        message: "INVITE sip:user@example.com SIP/2.0
To: \"Mr. J. User <sip:j.user@example.com>
From: sip:caller@example.net;tag=93334
Max-Forwards: 10
Call-ID: quotbal.aksdj
Contact: <sip:caller@host59.example.net>
CSeq: 8 INVITE
Via: SIP/2.0/UDP $VIA;rport;branch=z9hG4bKkdjuw
Content-Type: application/sdp
Content-Length: $CL

v=0
o=mhandley 29739 7272939 IN IP4 192.0.2.15
s=-
c=IN IP4 192.0.2.15
t=0 0
m=audio 49217 RTP/AVP 0
",
    },
    Case {
        name: "ltgtruri",
        section: "3.1.2.7 <> enclosing the Request-URI",
        expect: Expect::Status(&[400]),
        message: "INVITE <sip:user@example.com> SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=39291
Max-Forwards: 23
Call-ID: ltgtruri.1@192.0.2.5
CSeq: 1 INVITE
Via: SIP/2.0/UDP $VIA;rport;branch=z9hG4bKkdjuw
Contact: <sip:caller@host5.example.net>
Content-Type: application/sdp
Content-Length: $CL

v=0
o=mhandley 29739 7272939 IN IP4 192.0.2.5
s=-
c=IN IP4 192.0.2.5
t=0 0
m=audio 49217 RTP/AVP 0
",
    },
    Case {
        name: "lwsruri",
        section: "3.1.2.8 malformed SIP Request-URI (embedded LWS)",
        expect: Expect::Status(&[400]),
        message: "INVITE sip:user@example.com; lr SIP/2.0
To: sip:user@example.com;tag=3xfe-9921883-z9f
From: sip:caller@example.net;tag=231413434
Max-Forwards: 5
Call-ID: lwsruri.asdfasdoeoi2323-asdfwrn23-asd834rk423
CSeq: 2130706432 INVITE
Via: SIP/2.0/UDP $VIA;rport;branch=z9hG4bKkdjuw2395
Contact: <sip:caller@host1.example.net>
Content-Type: application/sdp
Content-Length: $CL

v=0
o=mhandley 29739 7272939 IN IP4 192.0.2.1
s=-
c=IN IP4 192.0.2.1
t=0 0
m=audio 49217 RTP/AVP 0
",
    },
    Case {
        name: "lwsstart",
        section: "3.1.2.9 multiple SP separating Request-Line elements",
        expect: Expect::Status(&[400]),
        message: "INVITE  sip:user@example.com  SIP/2.0
Max-Forwards: 8
To: sip:user@example.com
From: sip:caller@example.net;tag=8814
Call-ID: lwsstart.dfknq234oi243099adsdfnawe3@example.com
CSeq: 1893884 INVITE
Via: SIP/2.0/UDP $VIA;rport;branch=z9hG4bKkdjuw3923
Contact: <sip:caller@host1.example.net>
Content-Type: application/sdp
Content-Length: $CL

v=0
o=mhandley 29739 7272939 IN IP4 192.0.2.1
s=-
c=IN IP4 192.0.2.1
t=0 0
m=audio 49217 RTP/AVP 0
",
    },
    Case {
        name: "trws",
        section: "3.1.2.10 SP characters at the end of the Request-Line",
        expect: Expect::Status(&[400, 200]),
        message: "OPTIONS sip:remote-target@example.com SIP/2.0  
Via: SIP/2.0/TCP $VIA;rport;branch=z9hG4bKkdjuw
To: <sip:remote-target@example.com>
From: <sip:local-resource@example.com>;tag=329429089
Call-ID: trws.oicu34958239neffasdhr2345r
Accept: application/sdp
CSeq: 238923 OPTIONS
Max-Forwards: 70
Content-Length: 0

",
    },
    Case {
        name: "escruri",
        section: "3.1.2.11 escaped headers in the SIP Request-URI",
        expect: Expect::Status(&[400]),
        message: "INVITE sip:user@example.com?Route=%3Csip:example.com%3E SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=341518
Max-Forwards: 7
Contact: <sip:caller@host39923.example.net>
Call-ID: escruri.23940-asdfhj-aje3br-234q098w-fawerh2q-h4n5
CSeq: 149209342 INVITE
Via: SIP/2.0/UDP $VIA;rport;branch=z9hG4bKkdjuw
Content-Type: application/sdp
Content-Length: $CL

v=0
o=mhandley 29739 7272939 IN IP4 192.0.2.1
s=-
c=IN IP4 192.0.2.1
t=0 0
m=audio 49217 RTP/AVP 0
",
    },
    Case {
        name: "baddate",
        section: "3.1.2.12 invalid time zone in Date (the date is not needed)",
        expect: Expect::Processed,
        message: "INVITE sip:user@example.com SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=2234923
Max-Forwards: 70
Call-ID: baddate.239423mnsadf3j23lj42--sedfnm234
CSeq: 1392934 INVITE
Via: SIP/2.0/UDP $VIA;rport;branch=z9hG4bKkdjuw
Date: Fri, 01 Jan 2010 16:00:00 EST
Contact: <sip:caller@host5.example.net>
Content-Type: application/sdp
Content-Length: $CL

v=0
o=mhandley 29739 7272939 IN IP4 192.0.2.5
s=-
c=IN IP4 192.0.2.5
t=0 0
m=audio 49217 RTP/AVP 0
",
    },
    Case {
        name: "regbadct",
        section: "3.1.2.13 failure to enclose a name-addr URI in <> (a REGISTER)",
        expect: Expect::Status(&[400, 405]),
        message: "REGISTER sip:example.com SIP/2.0
To: sip:user@example.com
From: sip:user@example.com;tag=998332
Max-Forwards: 70
Call-ID: regbadct.k345asrl3fdbv@10.0.0.1
CSeq: 1 REGISTER
Via: SIP/2.0/UDP $VIA;rport;branch=z9hG4bKkdjuw
Contact: sip:user@example.com?Route=%3Csip:sip.example.com%3E
l: 0

",
    },
    Case {
        name: "badaspec",
        section: "3.1.2.14 spaces within addr-spec",
        expect: Expect::Status(&[400]),
        message: "OPTIONS sip:user@example.org SIP/2.0
Via: SIP/2.0/UDP $VIA;rport;branch=z9hG4bKkdju43234
Max-Forwards: 70
From: \"Bell, Alexander\" <sip:a.g.bell@example.com>;tag=433423
To: \"Watson, Thomas\" < sip:t.watson@example.org >
Call-ID: badaspec.sdf0234n2nds0a099u23h3hnnw009cdkne3
Accept: application/sdp
CSeq: 3923239 OPTIONS
l: 0

",
    },
    Case {
        name: "baddn",
        section: "3.1.2.15 non-token characters in an unquoted display name",
        expect: Expect::Status(&[400]),
        message: "OPTIONS sip:t.watson@example.org SIP/2.0
Via: SIP/2.0/UDP $VIA;rport;branch=z9hG4bKkdjuw
Max-Forwards: 70
From: Bell, Alexander <sip:a.g.bell@example.com>;tag=43
To: Watson, Thomas <sip:t.watson@example.org>
Call-ID: baddn.31415@c.example.com
Accept: application/sdp
CSeq: 3923239 OPTIONS
l: 0

",
    },
    Case {
        name: "badvers",
        section: "3.1.2.16 unknown protocol version",
        expect: Expect::Status(&[505]),
        message: "OPTIONS sip:t.watson@example.org SIP/7.0
Via:     SIP/7.0/UDP $VIA;rport;branch=z9hG4bKkdjuw
Max-Forwards:     70
From:    A. Bell <sip:a.g.bell@example.com>;tag=qweoiqpe
To:      T. Watson <sip:t.watson@example.org>
Call-ID: badvers.31417@c.example.com
CSeq:    1 OPTIONS
l: 0

",
    },
    Case {
        name: "mismatch01",
        section: "3.1.2.17 start line and CSeq method mismatch",
        expect: Expect::Status(&[400]),
        message: "OPTIONS sip:user@example.com SIP/2.0
To: sip:j.user@example.com
From: sip:caller@example.net;tag=34525
Max-Forwards: 6
Call-ID: mismatch01.dj0234sxdfl3
CSeq: 8 INVITE
Via: SIP/2.0/UDP $VIA;rport;branch=z9hG4bKkdjuw
l: 0

",
    },
    Case {
        name: "mismatch02",
        section: "3.1.2.18 unknown method with CSeq method mismatch",
        expect: Expect::Status(&[400, 501]),
        message: "NEWMETHOD sip:user@example.com SIP/2.0
To: sip:j.user@example.com
From: sip:caller@example.net;tag=34525
Max-Forwards: 6
Call-ID: mismatch02.dj0234sxdfl3
CSeq: 8 INVITE
Contact: <sip:caller@host.example.net>
Via: SIP/2.0/UDP $VIA;rport;branch=z9hG4bKkdjuw
Content-Type: application/sdp
l: $CL

v=0
o=mhandley 29739 7272939 IN IP4 192.0.2.1
s=-
c=IN IP4 192.0.2.1
t=0 0
m=audio 49216 RTP/AVP 0
",
    },
    Case {
        name: "bigcode",
        section: "3.1.2.19 overlarge response code",
        expect: Expect::Silence,
        message: "SIP/2.0 4294967301 better not break the receiver
Via: SIP/2.0/UDP $VIA;branch=z9hG4bK342sdfoi3
To: <sip:user@example.com>;tag=2348
From: <sip:user@example.net>;tag=22ng
Call-ID: bigcode.asdof3uj203asdnf3429uasdhfas3ehjasdfas9i
CSeq: 353494 INVITE
Contact: <sip:user@host.example.com>
Content-Length: 0

",
    },
    // 3.2 Transaction layer semantics.
    Case {
        name: "badbranch",
        section: "3.2.1 a branch of just the magic cookie",
        expect: Expect::Status(&[200]),
        message: "OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: sip:caller@example.org;tag=33242
Max-Forwards: 3
Via: SIP/2.0/UDP $VIA;rport;branch=z9hG4bK
Accept: application/sdp
Call-ID: badbranch.sadonfo23i420jv0as0derf3j3n
CSeq: 8 OPTIONS
l: 0

",
    },
    // 3.3 Application layer semantics.
    Case {
        name: "insuf",
        section: "3.3.1 missing mandatory header fields",
        expect: Expect::Status(&[400]),
        message: "INVITE sip:user@example.com SIP/2.0
CSeq: 193942 INVITE
Via: SIP/2.0/UDP $VIA;rport;branch=z9hG4bKkdjuw
Content-Type: application/sdp
l: $CL

v=0
o=mhandley 29739 7272939 IN IP4 192.0.2.95
s=-
c=IN IP4 192.0.2.95
t=0 0
m=audio 49217 RTP/AVP 0
",
    },
    Case {
        name: "unkscm",
        section: "3.3.2 Request-URI with an unknown scheme",
        expect: Expect::Status(&[416]),
        message: "OPTIONS nobodyKnowsThisScheme:totallyopaquecontent SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=384
Max-Forwards: 3
Call-ID: unkscm.nasdfasser0q239nwsdfasdkl34
CSeq: 3923423 OPTIONS
Via: SIP/2.0/TCP $VIA;rport;branch=z9hG4bKkdjuw
Content-Length: 0

",
    },
    Case {
        name: "novelsc",
        section: "3.3.3 Request-URI with an atypical scheme (soap.beep:)",
        expect: Expect::Status(&[416]),
        message: "OPTIONS soap.beep://192.0.2.103:3002 SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=384
Max-Forwards: 3
Call-ID: novelsc.asdfasser0q239nwsdfasdkl34
CSeq: 3923423 OPTIONS
Via: SIP/2.0/TCP $VIA;rport;branch=z9hG4bKkdjuw
Content-Length: 0

",
    },
    Case {
        name: "unksm2",
        section: "3.3.4 unknown URI schemes in header fields",
        expect: Expect::Status(&[200, 400]),
        message: "OPTIONS sip:user@example.com SIP/2.0
To: isbn:2983792873
From: <http://www.example.com>;tag=3234233
Call-ID: unksm2.daksdj@hyphenated-host.example.com
CSeq: 234902 OPTIONS
Max-Forwards: 3
Via: SIP/2.0/UDP $VIA;rport;branch=z9hG4bKkdjuw
Contact: <name:John_Smith>
l: 0

",
    },
    Case {
        name: "bext01",
        section: "3.3.5 proxy-require and require of an unknown extension",
        expect: Expect::Status(&[420]),
        message: "OPTIONS sip:user@example.com SIP/2.0
To: sip:j_user@example.com
From: sip:caller@example.net;tag=242etr
Max-Forwards: 6
Call-ID: bext01.0ha0isndaksdj
Require: nothingSupportsThis, nothingSupportsThisEither
Proxy-Require: noProxiesSupportThis, norDoAnyProxiesSupportThis
CSeq: 8 OPTIONS
Via: SIP/2.0/UDP $VIA;rport;branch=z9hG4bKkdjuw
Content-Length: 0

",
    },
    Case {
        name: "invut",
        section: "3.3.6 unknown Content-Type",
        expect: Expect::Status(&[415]),
        message: "INVITE sip:user@example.com SIP/2.0
Contact: <sip:caller@host5.example.net>
To: sip:j.user@example.com
From: sip:caller@example.net;tag=8392034
Max-Forwards: 70
Call-ID: invut.0ha0isndaksdjadsfij34n23d
CSeq: 235448 INVITE
Via: SIP/2.0/UDP $VIA;rport;branch=z9hG4bKkdjuw
Content-Type: application/unknownformat
Content-Length: $CL

<audio>
 <pcmu port=\"443\"/>
</audio>
",
    },
    Case {
        name: "regaut01",
        section: "3.3.7 unknown authorization scheme (a REGISTER)",
        expect: Expect::Status(&[405, 401]),
        message: "REGISTER sip:example.com SIP/2.0
To: sip:j.user@example.com
From: sip:j.user@example.com;tag=87321hj23128
Max-Forwards: 8
Call-ID: regaut01.0ha0isndaksdj
CSeq: 9338 REGISTER
Via: SIP/2.0/UDP $VIA;rport;branch=z9hG4bKkdjuw
Authorization: NoOneKnowsThisScheme opaque-data=here
Content-Length: 0

",
    },
    Case {
        name: "multi01",
        section: "3.3.8 multiple values in single-value header fields",
        expect: Expect::Status(&[400]),
        message: "INVITE sip:user@company.com SIP/2.0
Contact: <sip:caller@host25.example.net>
Via: SIP/2.0/UDP $VIA;rport;branch=z9hG4bKkdjuw
Max-Forwards: 70
CSeq: 5 INVITE
Call-ID: multi01.98asdh@192.0.2.1
CSeq: 59 INVITE
Call-ID: multi01.98asdh@192.0.2.2
From: sip:caller@example.com;tag=3413415
To: sip:user@example.com
To: sip:other@example.net
From: sip:caller@example.net;tag=2923420123
Content-Type: application/sdp
l: $CL
Contact: <sip:caller@host36.example.net>
Max-Forwards: 5

v=0
o=mhandley 29739 7272939 IN IP4 192.0.2.25
s=-
c=IN IP4 192.0.2.25
t=0 0
m=audio 49217 RTP/AVP 0
",
    },
    Case {
        name: "mcl01",
        section: "3.3.9 multiple Content-Length values",
        expect: Expect::Status(&[400]),
        message: "OPTIONS sip:user@example.com SIP/2.0
Via: SIP/2.0/UDP $VIA;rport;branch=z9hG4bKkdjuw
To: sip:user@example.com
From: sip:caller@example.net;tag=32394234
Call-ID: mcl01.fhn2323orihawfdoa3o4r52o3irsdf
CSeq: 15932 OPTIONS
Content-Length: 13
Max-Forwards: 60
Content-Length: 5
Content-Type: text/plain

There's no way to know how many octets are supposed to be here.
",
    },
    Case {
        name: "bcast",
        section: "3.3.10 200 OK response with a broadcast Via sent-by (for no transaction)",
        expect: Expect::Silence,
        message: "SIP/2.0 200 OK
Via: SIP/2.0/UDP $VIA;branch=z9hG4bKjkghweoiwe
Via: SIP/2.0/UDP 255.255.255.255;branch=z9hG4bK1saber23
Call-ID: bcast.0384840201234ksdfak3j2erwedfsASdf
CSeq: 35 INVITE
From: sip:user@example.com;tag=11141343
To: sip:user@example.edu;tag=2229
Content-Length: 0
Contact: <sip:user@host28.example.com>

",
    },
    Case {
        name: "zeromf",
        section: "3.3.11 Max-Forwards of zero",
        expect: Expect::Status(&[200, 483]),
        message: "OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=3ghsd41
Call-ID: zeromf.jfasdlfnm2o2l43r5u0asdfas
CSeq: 39234321 OPTIONS
Via: SIP/2.0/UDP $VIA;rport;branch=z9hG4bKkdjuw2349i
Max-Forwards: 0
Content-Length: 0

",
    },
    Case {
        name: "cparam01",
        section: "3.3.12 REGISTER with a contact header parameter",
        expect: Expect::Status(&[405]),
        message: "REGISTER sip:example.com SIP/2.0
Via: SIP/2.0/UDP $VIA;rport;branch=z9hG4bKkdjuw
Max-Forwards: 70
From: sip:watson@example.com;tag=DkfVgjkrtMwaerKKpe
To: sip:watson@example.com
Call-ID: cparam01.70710@saturn.example.com
CSeq: 2 REGISTER
Contact: sip:+19725552222@gw1.example.net;unknownparam
l: 0

",
    },
    Case {
        name: "cparam02",
        section: "3.3.13 REGISTER with a URL parameter",
        expect: Expect::Status(&[405]),
        message: "REGISTER sip:example.com SIP/2.0
Via: SIP/2.0/UDP $VIA;rport;branch=z9hG4bKkdjuw
Max-Forwards: 70
From: sip:watson@example.com;tag=838293
To: sip:watson@example.com
Call-ID: cparam02.70710@saturn.example.com
CSeq: 3 REGISTER
Contact: <sip:+19725552222@gw1.example.net;unknownparam>
l: 0

",
    },
    Case {
        name: "regescrt",
        section: "3.3.14 REGISTER with a URL escaped header",
        expect: Expect::Status(&[405]),
        message: "REGISTER sip:example.com SIP/2.0
To: sip:user@example.com
From: sip:user@example.com;tag=8
Max-Forwards: 70
Call-ID: regescrt.k345asrl3fdbv@192.0.2.1
CSeq: 14398234 REGISTER
Via: SIP/2.0/UDP $VIA;rport;branch=z9hG4bKkdjuw
Contact: <sip:user@example.com?Route=%3Csip:sip.example.com%3E>
L:0

",
    },
    Case {
        name: "sdp01",
        section: "3.3.15 unacceptable Accept offering (an answer in SDP is refused)",
        expect: Expect::Status(&[406]),
        message: "INVITE sip:user@example.com SIP/2.0
To: sip:j_user@example.com
Contact: <sip:caller@host15.example.net>
From: sip:caller@example.net;tag=234
Max-Forwards: 5
Call-ID: sdp01.ndaksdj9342dasdd
Accept: text/nobodyKnowsThis
CSeq: 8 INVITE
Via: SIP/2.0/UDP $VIA;rport;branch=z9hG4bKkdjuw
Content-Length: $CL
Content-Type: application/sdp

v=0
o=mhandley 29739 7272939 IN IP4 192.0.2.5
s=-
c=IN IP4 192.0.2.5
t=0 0
m=audio 49217 RTP/AVP 0
",
    },
    // 3.4 Backward compatibility.
    Case {
        name: "inv2543",
        section: "3.4.1 INVITE with RFC 2543 syntax",
        expect: Expect::Processed,
        message: "INVITE sip:UserB@example.com SIP/2.0
Via: SIP/2.0/UDP $VIA;rport
From: <sip:UserA@example.com>
To: <sip:UserB@example.com>
Call-ID: inv2543.1717@ieee.org
CSeq: 1 INVITE
Max-Forwards: 6
Content-Type: application/sdp
Content-Length: $CL

v=0
o=mhandley 29739 7272939 IN IP4 192.0.2.5
s=-
c=IN IP4 192.0.2.5
t=0 0
m=audio 49217 RTP/AVP 0
",
    },
];

/// The message of `case` as sent: CRLF line ends, `$VIA` and `$CL` filled.
fn wire_message(case: &Case, via: &str) -> Vec<u8> {
    let text = case.message.replace("\r\n", "\n").replace('\n', "\r\n");
    let text = text.replace("$VIA", via);
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if text.contains("$CL") => format!(
            "{}\r\n\r\n{body}",
            head.replace("$CL", &body.len().to_string())
        )
        .into_bytes(),
        _ => text.into_bytes(),
    }
}

/// The Call-ID of a message (long or compact form).
fn call_id(message: &str) -> Option<String> {
    message.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        let name = name.trim();
        (name.eq_ignore_ascii_case("call-id") || name.eq_ignore_ascii_case("i"))
            .then(|| value.trim().to_string())
    })
}

/// What comes back for one message, until its first answer that is not a
/// 100 (or `wait`); answers for calls of `earlier` messages left out.
fn answers(socket: &UdpSocket, wait: Duration, earlier: &[String]) -> Vec<String> {
    let deadline = std::time::Instant::now() + wait;
    let mut got = Vec::new();
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        let Some(message) = recv_until(socket, left, |_| true) else {
            break;
        };
        if call_id(&message).is_some_and(|id| earlier.contains(&id)) {
            continue;
        }
        let done = status(&message).is_some_and(|c| c != 100);
        got.push(message);
        if done {
            break;
        }
    }
    got
}

/// The status code of a SIP response.
fn status(message: &str) -> Option<u16> {
    message.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
}

#[test]
fn every_torture_message_gets_the_treatment_rfc_4475_expects() {
    let dir = workdir("rfc4475");
    let ports = Ports::slot(42);
    let _sav = Sav::start(&dir, ports, |c| c);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    let via = format!("127.0.0.1:{port}");
    let mut report = String::new();
    let mut wrong = Vec::new();
    let mut earlier: Vec<String> = Vec::new();
    // The messages as sent, also seeds for the SIP fuzz target.
    let seeds = std::path::Path::new(REPO).join("target/rfc4475");
    let _ = std::fs::create_dir_all(&seeds);
    for (n, case) in CASES.iter().enumerate() {
        let message = wire_message(case, &via);
        let _ = std::fs::write(seeds.join(format!("{}.sip", case.name)), &message);
        socket.send_to(&message, ("127.0.0.1", ports.sip)).unwrap();
        // Answers to this message only: a call an earlier message opened
        // may still be sending its 200 (never ACKed here).
        let wait = match case.expect {
            Expect::Silence => Duration::from_millis(500),
            _ => Duration::from_secs(2),
        };
        let got = answers(&socket, wait, &earlier);
        if let Some(id) = call_id(case.message) {
            earlier.push(id);
        }
        let codes: Vec<u16> = got.iter().filter_map(|m| status(m)).collect();
        // The first answer that says something (a 100 only says it is being
        // processed).
        let first = codes.iter().copied().find(|&c| c != 100);
        let ok = match case.expect {
            Expect::Status(expected) => first.is_some_and(|c| expected.contains(&c)),
            Expect::Processed => first.is_some_and(|c| c < 300),
            Expect::Silence => got.is_empty(),
        };
        report.push_str(&format!(
            "{:<10} {:<70} expected {:?}, got {:?}{}\n",
            case.name,
            case.section,
            case.expect,
            codes,
            if ok { "" } else { "  <-- WRONG" }
        ));
        if !ok {
            wrong.push(case.name);
        }
        // Alive after each one: OPTIONS answered.
        let options = options_text("127.0.0.1", port, ports.sip, n as u32, None);
        socket
            .send_to(options.as_bytes(), ("127.0.0.1", ports.sip))
            .unwrap();
        let tag = format!("opt{n}-{port}@test");
        let alive = recv_until(&socket, Duration::from_secs(2), |m| {
            m.starts_with("SIP/2.0 200") && m.contains(&tag)
        });
        assert!(
            alive.is_some(),
            "sav did not answer OPTIONS after {}:\n{report}",
            case.name
        );
    }
    print!("{report}");
    write_report("rfc4475-report.txt", &report);
    assert!(wrong.is_empty(), "wrong treatment of {wrong:?}:\n{report}");
}
