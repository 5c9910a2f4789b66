const o=globalThis.crypto,t={webcrypto:o};export{t as default,o as webcrypto};
