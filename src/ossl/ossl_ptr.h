#pragma once

#include <memory>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

namespace pipegate::ossl {

// Every owned OpenSSL object lives in one of these; no naked *_free calls elsewhere.
template <auto FreeFn>
struct Deleter {
  template <typename T>
  void operator()(T* p) const noexcept {
    FreeFn(p);
  }
};

inline void FreeGeneralNames(GENERAL_NAMES* names) noexcept { GENERAL_NAMES_free(names); }
// OPENSSL_free and the sk_* functions are macros, with no address to take: wrapped.
inline void FreeOpensslBytes(unsigned char* p) noexcept { OPENSSL_free(p); }
// Frees the stack only: the certificates it lists are borrowed and stay alive.
inline void FreeX509StackOnly(STACK_OF(X509) * stack) noexcept { sk_X509_free(stack); }
// Frees the stack and every name in it.
inline void FreeX509NameStack(STACK_OF(X509_NAME) * names) noexcept {
  sk_X509_NAME_pop_free(names, X509_NAME_free);
}

using SslCtxPtr = std::unique_ptr<SSL_CTX, Deleter<&SSL_CTX_free>>;
using SslPtr = std::unique_ptr<SSL, Deleter<&SSL_free>>;
using BioPtr = std::unique_ptr<BIO, Deleter<&BIO_free_all>>;
using X509Ptr = std::unique_ptr<X509, Deleter<&X509_free>>;
using EvpPkeyPtr = std::unique_ptr<EVP_PKEY, Deleter<&EVP_PKEY_free>>;
using GeneralNamesPtr = std::unique_ptr<GENERAL_NAMES, Deleter<&FreeGeneralNames>>;
using OpensslBytes = std::unique_ptr<unsigned char, Deleter<&FreeOpensslBytes>>;
using X509CrlPtr = std::unique_ptr<X509_CRL, Deleter<&X509_CRL_free>>;
using X509StoreCtxPtr = std::unique_ptr<X509_STORE_CTX, Deleter<&X509_STORE_CTX_free>>;
/// A stack of certificates owned elsewhere (e.g. the untrusted chain handed to
/// X509_STORE_CTX_init): freeing it leaves the certificates alone.
using X509BorrowedStackPtr = std::unique_ptr<STACK_OF(X509), Deleter<&FreeX509StackOnly>>;
using X509NameStackPtr = std::unique_ptr<STACK_OF(X509_NAME), Deleter<&FreeX509NameStack>>;
using Asn1OctetStringPtr = std::unique_ptr<ASN1_OCTET_STRING, Deleter<&ASN1_OCTET_STRING_free>>;
using EvpMdCtxPtr = std::unique_ptr<EVP_MD_CTX, Deleter<&EVP_MD_CTX_free>>;
using EvpCipherCtxPtr = std::unique_ptr<EVP_CIPHER_CTX, Deleter<&EVP_CIPHER_CTX_free>>;

}  // namespace pipegate::ossl
